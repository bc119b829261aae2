"""Content negotiation for arrays: which form an answer takes.

The forms: raw little-endian bytes, JSON, ``.npy`` (numpy's file format:
``numpy.load`` gets dtype and shape), CSV (one value a line under the key as
header) and text (the bytes of an int8/uint8 array that holds UTF-8, such as
tskit's metadata and provenance columns). ``?format=rows`` (JSON of a ragged
column, ``X`` cut at ``X_offset``) is asked for by name only.

``?format=`` beats ``Accept``. Without either, arrays are raw bytes. An
``Accept`` header is read as RFC 9110 §12.5.1 says: each form gets the
quality (``q``) of the most specific media range that matches it
(``application/json`` before ``application/*`` before ``*/*``); a form with
``q=0`` is never chosen. The highest quality wins; on a tie the form the
header names more specifically wins (so ``application/json, */*`` is JSON),
then raw. When no form is acceptable the answer is 406. A header holding no
media range at all (empty, or unreadable) counts as absent.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from .errors import NotAcceptableError

__all__ = ["EXTENSIONS", "FORMATS", "Format", "choose_format"]

Format = Literal["raw", "json", "npy", "csv", "text", "rows"]

#: Each form ``Accept`` can choose and its media type, in the order ties are broken.
FORMATS: dict[Format, str] = {
    "raw": "application/octet-stream",
    "json": "application/json",
    "npy": "application/x-npy",
    "csv": "text/csv",
    "text": "text/plain",
}

#: The file name extension of each form that is sent as a download.
EXTENSIONS: dict[Format, str] = {"raw": "bin", "npy": "npy", "csv": "csv"}


def choose_format(format: Format | None, accept: str | None, *, text: bool = True) -> Format:
    """The form to answer in: ``format`` if given, else the best ``Accept`` allows.

    ``text`` says whether the array can be text at all (int8 or uint8).

    Raises:
        NotAcceptableError: ``Accept`` excludes every form.
    """
    if format is not None:
        return format
    if accept is None:
        return "raw"
    return _negotiate(accept, text)


#: Media ranges as ``(type, subtype, q)``.
_Ranges = list[tuple[str, str, float]]


def _parse(accept: str) -> _Ranges:
    ranges: _Ranges = []
    for element in accept.split(","):
        media, *params = element.split(";")
        kind, slash, subkind = media.strip().lower().partition("/")
        if not slash or not kind or not subkind:
            continue  # not a media range: ignored
        q = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
        if 0.0 <= q <= 1.0:
            ranges.append((kind, subkind, q))
    return ranges


def _quality(media_type: str, ranges: _Ranges) -> tuple[float, int]:
    """``(q, specificity)`` of the most specific range matching ``media_type``; q 0 if none."""
    kind, _, subkind = media_type.partition("/")
    best = (0.0, -1)
    for range_kind, range_subkind, q in ranges:
        if (range_kind, range_subkind) == (kind, subkind):
            specificity = 2
        elif (range_kind, range_subkind) == (kind, "*"):
            specificity = 1
        elif (range_kind, range_subkind) == ("*", "*"):
            specificity = 0
        else:
            continue
        if specificity > best[1]:
            best = (q, specificity)
    return best


@lru_cache(maxsize=64)  # clients send the same few headers again and again
def _negotiate(accept: str, text: bool) -> Format:
    ranges = _parse(accept)
    if not ranges:  # empty, or not one media range in it: as if absent
        return "raw"
    chosen: Format | None = None
    best = (0.0, -1)
    offered = {form: media for form, media in FORMATS.items() if text or form != "text"}
    for form, media_type in offered.items():
        quality = _quality(media_type, ranges)
        if quality[0] > 0 and quality > best:
            chosen, best = form, quality
    if chosen is None:
        raise NotAcceptableError(accept, offered.values())
    return chosen
