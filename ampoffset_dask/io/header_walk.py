"""The headers of a local, unwrapped FITS file, walked without astropy's HDU objects.

Planning and every reader start from `~ampoffset_dask.io.fits.inspect_file`, which needs a
few dozen keywords of each HDU. astropy's `~astropy.io.fits.HDUList` parses every card of
every header and builds an HDU object per extension: ~16 ms for an LSSTCam raw (17 HDUs,
~2,200 cards), all of it holding the GIL, so header-reading threads cannot share it out.
`walk_headers` reads the header blocks as bytes, chooses the cards by keyword before astropy
parses them, and seeks over the data units.

Only plain files are walked. Anything unusual returns None and the caller reads the file
with astropy, whose interpretation and errors then apply unchanged: a file that does not
start with a primary header, a header without a plain ``END`` card, non-ASCII header bytes,
a header astropy cannot parse, data running past the end of the file, bytes after the last
HDU, random groups, tile-compressed images, or an extension that is not an image or a
table.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from astropy.io import fits

from .sections import _FITS_BLOCK as _BLOCK
from .sections import _MAX_HEADER_BLOCKS, declared_data_bytes

__all__ = ["CachedHeader", "WalkedHdu", "plain_values", "walk_headers"]

_CARD = 80
_END_CARD = b"END" + b" " * 77
_EXTENSIONS = ("IMAGE", "BINTABLE", "TABLE")
_BITPIX = (8, 16, 32, 64, -32, -64)


class CachedHeader(Mapping):
    """A read-only view of an astropy header whose lookups astropy answers once each.

    Readers ask the same headers for the same keywords many times, and every astropy lookup
    parses or re-checks its card (~5 us). Every answer is astropy's (a lookup astropy
    refuses raises again each time).

    `from_cards` makes one from card images; when every card is a plain one (`plain_values`)
    the values are read without astropy, and astropy's header is only built for a lookup
    those values cannot answer.
    """

    def __init__(self, header: fits.Header | None = None, *,
                 values: dict[str, Any] | None = None, text: str = "") -> None:
        self._header_obj = header
        self._values = values
        self._text = text
        self._got: dict[str, Any] = {}
        self._has: dict[object, bool] = {}

    @classmethod
    def from_cards(cls, text: str) -> CachedHeader:
        """The header of card images ``text`` (80 characters each, ``END`` last)."""
        values = plain_values(text)
        if values is None:
            return cls(fits.Header.fromstring(text))
        return cls(values=values, text=text)

    @property
    def _header(self) -> fits.Header:
        if self._header_obj is None:
            self._header_obj = fits.Header.fromstring(self._text)
        return self._header_obj

    def _plain_key(self, key: object) -> str | None:
        """The keyword the plain values answer ``key`` by (None: ask astropy's header)."""
        if self._values is None or not isinstance(key, str):
            return None
        upper = key.upper()
        return upper if _PLAIN_KEYWORD.fullmatch(upper) else _normalized(key)

    def get(self, key: str, default: Any = None) -> Any:
        plain = self._plain_key(key)
        if plain is not None:
            return self._values.get(plain, default)
        try:
            value = self._got[key]
        except KeyError:
            value = self._got[key] = self._header.get(key, _ABSENT)
        return default if value is _ABSENT else value

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _ABSENT)
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        plain = self._plain_key(key)
        if plain is not None:
            return plain in self._values
        try:
            return self._has[key]
        except KeyError:  # (astropy's test reads the keywords only, not the values)
            has = self._has[key] = key in self._header
            return has

    def __iter__(self) -> Iterator[str]:
        return iter(self._values if self._values is not None else self._header)

    def __len__(self) -> int:
        return len(self._values if self._values is not None else self._header)


@functools.lru_cache(maxsize=256)
def _normalized(key: str) -> str | None:
    """astropy's keyword for ``key`` (``"HIERARCH VISIT"`` and ``"visit"`` are ``VISIT``),
    or None for a record-valued field (``DP1.AXIS.1``): astropy's header answers those."""
    try:
        keyword = fits.Card.normalize_keyword(key)
    except Exception:  # astropy's lookup decides (and raises)
        return None
    return None if "." in keyword else keyword


#: A keyword of a plain card: what astropy looks such a keyword up by, too.
_PLAIN_KEYWORD = re.compile(r"[A-Z0-9_-]{1,8}")
#: The name of a plain HIERARCH card: upper-case words separated by single blanks.
_HIERARCH_KEYWORD = re.compile(r"[A-Z0-9_-]+(?: [A-Z0-9_-]+)*")
#: The value field (columns 11-80) of a plain card: a string without quotes inside (astropy
#: can end a string with ``''`` at a doubled quote) or a record-valued field specifier, a
#: logical, or an integer or real number written without inner blanks, then blanks and an
#: optional comment.
_PLAIN_VALUE = re.compile(
    r" *(?:'(?P<s>[ -&(-~]*)'|(?P<b>[TF])|"
    r"(?P<n>[+-]?(?:\d+\.?\d*|\.\d+)(?:[EeDd][+-]?\d+)?)) *(?:/[ -~]*)?")
#: A string astropy might read as a record-valued card (``'AXIS.1: 2'``).
_RECORD_VALUED = re.compile(r" *[a-zA-Z_][\w.]* *:")
_TO_E = str.maketrans("Dd", "Ee")
#: Keywords astropy reads by their own rules whatever follows them.
_SPECIAL = frozenset({"CONTINUE", "COMMENT", "HISTORY", "HIERARCH", "END"})


def plain_values(text: str) -> dict[str, Any] | None:
    """``{keyword: value}`` of card images ``text`` (``END`` last) when every card is a
    plain one, else None (astropy then reads them).

    A plain card is printable ASCII: a keyword of upper-case letters, digits, ``-`` and
    ``_`` with the value indicator ``"= "`` in columns 9-10 (or ``HIERARCH``, a name of
    such words separated by single blanks and ``=``), then a value `_PLAIN_VALUE` reads; no
    keyword appears twice. Values are astropy's: `bool`, `int`, `float`, or `str` with
    trailing blanks removed (astropy's ``strip_header_whitespace``, on by default). Anything
    else (``CONTINUE``, ``HIERARCH``, commentary
    cards, undefined or complex values, free-format oddities, that setting turned off) is
    left to astropy.
    """
    if not fits.conf.strip_header_whitespace or not text.isprintable():
        return None
    values: dict[str, Any] = {}
    for i in range(0, len(text) - _CARD, _CARD):
        card = text[i:i + _CARD]
        if card.startswith("HIERARCH "):  # the name up to the first "=", then the value
            eq = card.find("=", 9)
            keyword = card[9:eq].strip() if eq > 0 else ""
            if not _HIERARCH_KEYWORD.fullmatch(keyword) or keyword.startswith("HIERARCH"):
                return None  # (astropy looks "HIERARCH HIERARCH X" up as X)
            start = eq + 1
        else:
            keyword = card[:8].rstrip()
            if card[8:10] != "= " or not _PLAIN_KEYWORD.fullmatch(keyword):
                return None
            start = 10
        m = _PLAIN_VALUE.fullmatch(card, start)
        if m is None or keyword in values or keyword in _SPECIAL:
            return None
        if m["s"] is not None:
            if _RECORD_VALUED.match(m["s"]):
                return None
            values[keyword] = m["s"].rstrip()
        elif m["b"] is not None:
            values[keyword] = m["b"] == "T"
        else:
            number = m["n"]
            try:
                values[keyword] = int(number)
            except ValueError:
                values[keyword] = float(number.translate(_TO_E))
    return values


_ABSENT = object()


@dataclasses.dataclass(frozen=True)
class WalkedHdu:
    """One HDU of a walked file.

    ``header`` holds only the cards `walk_headers` kept (and ``END``); the data unit starts
    at byte ``data_offset`` of the file.
    """

    index: int
    header: CachedHeader
    data_offset: int


def walk_headers(path: Path, names: Iterable[str], prefixes: Iterable[str] = ()
                 ) -> list[WalkedHdu] | None:
    """The HDUs of a local FITS file, each header reduced to the cards the caller reads.

    Parameters
    ----------
    path : Path
        A local, unwrapped FITS file.
    names, prefixes : iterable of str
        Keep the cards whose keyword (upper case; for HIERARCH cards the name after
        ``HIERARCH``) is one of ``names`` or starts with one of ``prefixes``; ``CONTINUE``
        cards go with the card they continue. The structural keywords are always kept.
        Prefixes may keep a few cards the caller does not read: it reads by name.

    Returns
    -------
    list of WalkedHdu, or None
        None when the file is not a plain one (see the module docstring): the caller
        reads it with astropy instead.
    """
    select = _Selection(names, prefixes)
    out: list[WalkedHdu] = []
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        pos = 0
        while pos < size:
            head = _read_header(fh, first=not out)
            if head is None:
                return None
            raw, n_cards = head
            try:
                header = CachedHeader.from_cards(select.cards(raw, n_cards))
                plain = _plain(header, len(out))
                data = declared_data_bytes(header) if plain else 0
            except Exception:  # astropy's reading decides (and reports why)
                return None
            data_offset = pos + len(raw)
            if not plain or data_offset + data > size:
                return None
            out.append(WalkedHdu(len(out), header, data_offset))
            pos = data_offset + data
            fh.seek(pos)
    return out or None


def _read_header(fh: BinaryIO, first: bool) -> tuple[bytes, int] | None:
    """The header blocks starting at the file's position and the number of cards before
    its ``END`` card; None if it is not a plain ASCII header."""
    blocks: list[bytes] = []
    while len(blocks) < _MAX_HEADER_BLOCKS:
        block = fh.read(_BLOCK)
        if len(block) < _BLOCK:
            return None
        if not blocks and not block.startswith(b"SIMPLE  =" if first else b"XTENSION="):
            return None
        blocks.append(block)
        for i in range(0, _BLOCK, _CARD):
            if block[i:i + 8] == b"END     ":
                raw = b"".join(blocks)
                if block[i:i + _CARD] != _END_CARD or not raw.isascii():
                    return None
                return raw, ((len(blocks) - 1) * _BLOCK + i) // _CARD
    return None


class _Selection:
    """Which cards to keep, by keyword."""

    def __init__(self, names: Iterable[str], prefixes: Iterable[str]) -> None:
        self.names = frozenset(n.upper() for n in names) | _STRUCTURE
        self.prefixes = tuple(p.upper() for p in prefixes) + _STRUCTURE_PREFIXES

    def cards(self, raw: bytes, n_cards: int) -> str:
        """The kept cards of a header (``raw``, ``n_cards`` cards before ``END``) and
        ``END``."""
        text = raw.decode("ascii")
        names, prefixes = self.names, self.prefixes
        kept = []
        keeping = False
        for i in range(0, n_cards * _CARD, _CARD):
            # The keyword as astropy reads it: the first 8 characters, cut at an early "= ",
            # or the name between HIERARCH and "=" (a record-valued card keeps its base name).
            keyword = text[i:i + 8].strip().upper()
            if keyword == "CONTINUE":
                if keeping:
                    kept.append(text[i:i + _CARD])
                continue
            if keyword == "HIERARCH":
                eq = text.find("=", i + 8, i + _CARD)
                keyword = text[i + 8:eq].strip().upper() if eq > 0 else ""
                while keyword.startswith("HIERARCH "):  # found by astropy either way
                    keyword = keyword[9:].lstrip()
            else:
                eq = text.find("= ", i, i + 9)
                if eq >= 0:
                    keyword = keyword[:eq - i]
            keeping = keyword in names or keyword.startswith(prefixes)
            if keeping:
                kept.append(text[i:i + _CARD])
        kept.append(_END_CARD.decode("ascii"))
        return "".join(kept)


_STRUCTURE = frozenset({"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "GROUPS",
                        "ZIMAGE"})
_STRUCTURE_PREFIXES = ("NAXIS",)


def _plain(header: CachedHeader, index: int) -> bool:
    """Whether astropy reads this HDU as a plain image or table HDU (else: let it)."""
    if int(header["BITPIX"]) not in _BITPIX:
        return False
    if index == 0:
        return header.get("SIMPLE") is True and not header.get("GROUPS")
    xtension = str(header.get("XTENSION", "")).strip().upper()
    return xtension in _EXTENSIONS and not (xtension == "BINTABLE" and header.get("ZIMAGE"))
