"""Placeholder replaced by the LSST-compatible task in the next commit."""


class AmpOffsetTask:
    pass
