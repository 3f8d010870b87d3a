"""Exception hierarchy shared by every layer."""

from __future__ import annotations

__all__ = ["AmpOffsetError", "ClusterError", "ConfigError", "GeometryError", "InputError"]


class AmpOffsetError(Exception):
    """Base class of every error raised on purpose by ampoffset-dask."""


class ConfigError(AmpOffsetError, ValueError):
    """An invalid configuration value; the message names the field."""


class GeometryError(AmpOffsetError, ValueError):
    """An amplifier layout the algorithm cannot use; the message names the amps."""


class InputError(AmpOffsetError):
    """A bad input file or header; the message names the file and the reason."""


class ClusterError(ConfigError):
    """The Dask cluster could not be started or reached (bad scheduler spec, unreachable
    address, missing deployment extra, failed start); the message names the spec.

    A `ConfigError` subclass, so code that caught the earlier `ConfigError` still works.
    """
