"""Minimal stand-ins for LSST afw objects (exposure, detector, amps, boxes, PropertyList).

Only the methods the duck-typing adapter calls: ``.image.array``, ``.mask.array``,
``.mask.getMaskPlaneDict()``, ``.getDetector()`` (iterable of amps with ``getName()`` and
``getBBox()``), ``.getMetadata().set(key, value, comment)``.
"""

from __future__ import annotations

import numpy as np

from ampoffset_dask.masks import DEFAULT_MASK_PLANES


class FakeBox:
    def __init__(self, x0, y0, w, h):
        self._v = (x0, y0, w, h)

    def getMinX(self):
        return self._v[0]

    def getMinY(self):
        return self._v[1]

    def getWidth(self):
        return self._v[2]

    def getHeight(self):
        return self._v[3]


class FakeAmp:
    def __init__(self, amp):
        self._name = amp.name
        self._box = FakeBox(amp.x0, amp.y0, amp.width, amp.height)

    def getName(self):
        return self._name

    def getBBox(self):
        return self._box


class FakeDetector:
    def __init__(self, det):
        self._amps = [FakeAmp(a) for a in det.amplifiers]
        self._name = det.name

    def __iter__(self):
        return iter(self._amps)

    def getName(self):
        return self._name

    def getId(self):
        return 20


class FakePlane:
    def __init__(self, array, planes=None):
        self.array = array
        self._planes = planes

    def getMaskPlaneDict(self):
        return dict(self._planes)


class FakePropertyList:
    def __init__(self):
        self.values = {}
        self.comments = {}

    def set(self, key, value, comment=None):
        self.values[key] = value
        self.comments[key] = comment


class FakeExposure:
    def __init__(self, image, det, mask=None, planes=None):
        self.image = FakePlane(np.asarray(image, np.float32))
        self.mask = FakePlane(np.zeros(image.shape, np.int32) if mask is None else mask,
                              DEFAULT_MASK_PLANES if planes is None else planes)
        self._det = FakeDetector(det)
        self._md = FakePropertyList()

    def getDetector(self):
        return self._det

    def getMetadata(self):
        return self._md
