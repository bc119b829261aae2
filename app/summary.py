"""What a plot of an array needs, whatever the array's length: statistics, buckets, a histogram.

A browser cannot usefully draw ten million points, and should not download
80 MB to show a plot. A summary of elements ``[start, stop)`` holds:

- **statistics** of its finite values: ``min``, ``max`` and ``mean`` (null when
  there is none), and how many elements are NaN and how many are ±infinity;
- **buckets**: the elements split into at most ``buckets`` contiguous runs of
  near equal length, run ``i`` starting at element ``starts[i]``, each with the
  min and max of its finite values (null for a run that has none). Drawn as a
  band, they show every spike a full plot would show;
- a **histogram** of the finite values: ``counts[i]`` values in
  ``[edges[i], edges[i + 1])``, the last bin closed. Floats get at most
  ``bins`` equal bins between min and max; integers get bins of a whole
  number of values, one bin per value when there are few.

Everything is numpy and runs in a worker thread (``summarize`` blocks): on
ten million float64 it takes some tens of milliseconds. The histogram is
counted a block at a time into buffers that stay in the CPU's cache, which
makes it several times as fast as ``numpy.histogram``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["BLOCK_ELEMENTS", "summarize"]

#: Elements binned at a time by the histogram.
BLOCK_ELEMENTS = 1 << 16


def summarize(array: np.ndarray, *, buckets: int, bins: int, offset: int = 0) -> dict[str, Any]:
    """The summary of ``array`` (see the module) as a JSON-ready dict.

    ``offset`` is the position of ``array[0]`` in the whole array: bucket
    starts count from there. NaN in the float lists becomes null when encoded
    with orjson. Blocking: call it in a worker thread.

    ``buckets=0`` or ``bins=0`` leaves that part out (an empty list), for a
    caller that wants the other part sooner.

    Raises:
        ValueError: ``buckets`` or ``bins`` is negative.
    """
    if buckets < 0 or bins < 0:
        raise ValueError(f"expected buckets and bins >= 0, got {buckets} and {bins}")
    length = len(array)
    n = min(buckets, length)
    starts = (np.arange(n, dtype=np.int64) * length) // max(n, 1)
    low = high = starts
    nan_count = inf_count = 0
    finite = array
    lowest: Any = None
    highest: Any = None
    mean: float | None = None
    if length:
        # Without buckets, runs of a block each give the extremes just as well.
        runs = starts if n else np.arange(0, length, BLOCK_ELEMENTS, dtype=np.int64)
        run_low, run_high, total = _extremes(array, runs)
        lowest, highest = run_low.min(), run_high.max()
        if n:
            low, high = run_low, run_high
        mean = total / length
        # Both finite: NaN would have won either, so every element is finite.
        if array.dtype.kind == "f" and not (np.isfinite(lowest) and np.isfinite(highest)):
            nan_count = int(np.count_nonzero(np.isnan(array)))
            finite = array[np.isfinite(array)]
            inf_count = length - nan_count - len(finite)
            lowest, highest = (finite.min(), finite.max()) if len(finite) else (None, None)
            with np.errstate(over="ignore"):  # near the largest float: inf, as numpy says
                mean = float(finite.mean(dtype=np.float64)) if len(finite) else None
            if n:
                # fmin and fmax skip NaN: a run of NaN and ±inf alone comes out NaN (null).
                values = np.where(np.isfinite(array), array, np.nan)
                low, high = np.fmin.reduceat(values, starts), np.fmax.reduceat(values, starts)
    count = len(finite)
    return {
        "length": length,
        "finite_count": count,
        "nan_count": nan_count,
        "inf_count": inf_count,
        "min": None if lowest is None else lowest.item(),
        "max": None if highest is None else highest.item(),
        "mean": mean,
        "buckets": {
            "starts": (starts + offset).tolist(),
            "min": low.tolist(),
            "max": high.tolist(),
        },
        "histogram": _histogram(finite, lowest, highest, bins),
    }


def _extremes(array: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The min and max of each run (``starts``) and the sum of all, in one pass.

    Runs are taken a cache-sized group at a time, so that the three reductions
    read each group from memory once: ten million elements are read once
    instead of three times.
    """
    length = len(array)
    ends = np.append(starts[1:], length)
    low = np.empty(len(starts), dtype=array.dtype)
    high = np.empty(len(starts), dtype=array.dtype)
    total = 0.0
    first = 0
    while first < len(starts):
        begin = int(starts[first])
        last = max(first + 1, int(np.searchsorted(ends, begin + BLOCK_ELEMENTS, side="right")))
        block = array[begin : int(ends[last - 1])]
        local = starts[first:last] - begin
        low[first:last] = np.minimum.reduceat(block, local)
        high[first:last] = np.maximum.reduceat(block, local)
        with np.errstate(all="ignore"):  # inf and NaN: the caller starts again without them
            total += float(block.sum(dtype=np.float64))
        first = last
    return low, high, total


def _histogram(finite: np.ndarray, lowest: Any, highest: Any, bins: int) -> dict[str, list[Any]]:
    if lowest is None or bins == 0:
        return {"edges": [], "counts": []}
    if finite.dtype.kind in "iu":
        return _integer_histogram(finite, int(lowest), int(highest), bins)
    low, high = float(lowest), float(highest)
    if low == high:
        return {"edges": [low, high], "counts": [len(finite)]}
    # Weighted, so that no edge overflows when the span is wider than the largest float.
    steps = np.arange(bins + 1) / bins
    edges = low * (1 - steps) + high * steps
    edges[-1] = high
    span = high - low
    if np.isfinite(span):
        scale, shift, half = bins / span, low, 1.0
    else:  # -1e308 to 1e308: work with halves
        scale, shift, half = bins / (high * 0.5 - low * 0.5), low * 0.5, 0.5

    # numpy scalars, so that float32 blocks are computed in float64 too.
    factor, term = np.float64(half * scale), np.float64(-shift * scale)
    if not (np.isfinite(factor) and np.isfinite(term)):  # a span of a few subnormals
        counts, _ = np.histogram(finite, bins=edges)
        return {"edges": edges.tolist(), "counts": counts.tolist()}

    def place(block: np.ndarray, out: npt.NDArray[np.float64]) -> None:
        np.multiply(block, factor, out=out)
        np.add(out, term, out=out)

    counts = _count(finite, bins, place, np.float64)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _integer_histogram(finite: np.ndarray, low: int, high: int, bins: int) -> dict[str, list[Any]]:
    span = high - low + 1
    width = -(-span // bins)
    n = -(-span // width)
    if n == 1:  # the width may not fit in 64 bits: the whole range of int64 in one bin
        return {"edges": [low, low + width], "counts": [len(finite)]}
    # Differences are taken modulo 2**64, which is exact: each is in [0, 2**64).
    shift = np.uint64(low % (1 << 64))
    step = np.uint64(width)

    def place(block: np.ndarray, out: npt.NDArray[np.uint64]) -> None:
        np.copyto(out, block, casting="unsafe")  # int64 -> uint64 wraps, as wanted
        np.subtract(out, shift, out=out)
        np.floor_divide(out, step, out=out)

    counts = _count(finite, n, place, np.uint64)
    edges = [low + width * i for i in range(n + 1)]
    return {"edges": edges, "counts": counts.tolist()}


def _count(values: np.ndarray, bins: int, place: Any, kind: type[np.generic]) -> np.ndarray:
    """Counts per bin, ``place`` writing each block's fractional bin positions into a buffer."""
    counts = np.zeros(bins, dtype=np.int64)
    buffer = np.empty(min(len(values), BLOCK_ELEMENTS), dtype=kind)
    index = np.empty(len(buffer), dtype=np.intp)
    for first in range(0, len(values), BLOCK_ELEMENTS):
        block = values[first : first + BLOCK_ELEMENTS]
        out, where = buffer[: len(block)], index[: len(block)]
        place(block, out)
        np.copyto(where, out, casting="unsafe")  # floor, for positions >= 0
        np.minimum(where, bins - 1, out=where)  # the maximum falls in the last bin
        counts += np.bincount(where, minlength=bins)
    return counts
