"""From the frames of a store to photometry samples (one per CDS frame or read pair).

Detector stages deliver either CDS differences (``read_kind == 2``, one sample
per frame) or raw reads (``read_kind`` 0 = first read after reset, 1 = signal
read; the fast profile has no CDS stage).  For reads, a sample is a pair of a
first read immediately followed by its signal read; the flux of the first read
is subtracted from the flux of the signal read (measured with the same
weights), which removes the reset level.  Reads without a partner are counted
and skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ...dq import DO_NOT_USE_MASK, DQ
from ...frames import FrameSource
from ..errors import DataError

__all__ = [
    "READ_FIRST",
    "READ_SIGNAL",
    "READ_CDS",
    "SampleLayout",
    "SampleChunk",
    "MISSING_MASK",
    "sample_layout",
    "pair_variance",
    "load_samples",
]

READ_FIRST, READ_SIGNAL, READ_CDS = 0, 1, 2


@dataclass(frozen=True)
class SampleLayout:
    """Which frames make each output sample."""

    mode: str                  #: "cds" (one frame per sample) or "reads" (first + signal read)
    signal: np.ndarray         #: (B,) frame index of the CDS frame / signal read
    first: np.ndarray          #: (B,) frame index of the first read ("reads"); equal to ``signal`` for "cds"
    n_frames: int              #: frames in the input
    n_unpaired: int            #: reads without a partner (skipped)

    @property
    def n_samples(self) -> int:
        return len(self.signal)

    def frame_range(self, b0: int, b1: int) -> tuple[int, int]:
        """Contiguous frame range ``[lo, hi)`` holding samples ``b0..b1-1``."""
        return int(self.first[b0]), int(self.signal[b1 - 1]) + 1

    def blocks(self, max_samples: int) -> Iterator[tuple[int, int]]:
        """Sample blocks ``(b0, b1)`` of at most ``max_samples`` samples."""
        for b0 in range(0, self.n_samples, max_samples):
            yield b0, min(b0 + max_samples, self.n_samples)


def sample_layout(read_kind: np.ndarray) -> SampleLayout:
    """Pair reads (or pass CDS frames through) from the per-frame ``read_kind``.

    Parameters
    ----------
    read_kind : ndarray of int, shape (n_frames,)
        0 first read, 1 signal read, 2 CDS difference.

    Raises
    ------
    ValueError
        When CDS frames and reads are mixed, or no sample can be formed.
    """
    kind = np.asarray(read_kind, np.int64)
    n = len(kind)
    if n and np.all(kind == READ_CDS):
        idx = np.arange(n)
        return SampleLayout("cds", idx, idx, n, 0)
    if np.any(kind == READ_CDS) or np.any((kind != READ_FIRST) & (kind != READ_SIGNAL)):
        raise DataError("input mixes CDS frames and reads (read_kind must be all 2, or 0/1)")
    first = np.flatnonzero((kind[:-1] == READ_FIRST) & (kind[1:] == READ_SIGNAL))
    if len(first) == 0:
        raise DataError("no first/signal read pair found in the input frames")
    return SampleLayout("reads", first + 1, first, n, n - 2 * len(first))


def pair_variance(var_signal: np.ndarray, var_first: np.ndarray,
                  read_var: np.ndarray | None) -> np.ndarray:
    """Variance of ``signal - first`` for two reads of one ramp (e-^2).

    Both reads contain the charge collected before the first read, so their
    errors are correlated through its shot noise ``var_first - read_var``:
    ``var = var_signal + var_first - 2 * max(var_first - read_var, 0)``.
    Without a read-noise map the covariance is ignored (conservative).

    Parameters
    ----------
    var_signal, var_first : ndarray
        Per-read variances (e-^2).
    read_var : ndarray or None
        Read-noise variance per pixel (e-^2), broadcastable to the reads.
    """
    total = np.asarray(var_signal, np.float64) + var_first
    if read_var is None:
        return total
    return total - 2.0 * np.maximum(np.asarray(var_first, np.float64) - read_var, 0.0)


#: dq bits meaning "this frame is not there" (used for the UNPAIRED photometry flag)
MISSING_MASK = int(DQ.UNPAIRED | DQ.DROPPED)


@dataclass
class SampleChunk:
    """The frames of a block of samples, as float64 arrays ``(n, H, W)``.

    ``data``/``var``/``dq`` describe the sample image (the CDS frame, or
    signal minus first read with the pair variance and the OR of both dq);
    for reads, ``signal``/``first`` hold the two reads for the flux-level
    difference.
    """

    data: np.ndarray
    var: np.ndarray
    dq: np.ndarray
    time_s: np.ndarray
    signal: np.ndarray | None = None
    first: np.ndarray | None = None
    start: int = 0          #: index of the first sample (for messages)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def good(self) -> np.ndarray:
        """Usable pixels: no DO_NOT_USE bit, finite data and variance."""
        return ((self.dq & DO_NOT_USE_MASK) == 0) & np.isfinite(self.data) & np.isfinite(self.var)

    @property
    def missing(self) -> np.ndarray:
        """Pixels flagged as missing frames (UNPAIRED or DROPPED)."""
        return (self.dq & MISSING_MASK) != 0

    def planes(self) -> list[tuple[float, np.ndarray]]:
        """``(sign, image)`` planes whose signed sum is the sample: the CDS frame, or signal and first read."""
        if self.signal is None:
            return [(1.0, self.data)]
        return [(1.0, self.signal), (-1.0, self.first)]

    def net(self, skies: list[np.ndarray]) -> np.ndarray:
        """Sky-subtracted sample image from one sky estimate per plane (broadcastable to the planes)."""
        return sum(sign * (plane - sky) for (sign, plane), sky in zip(self.planes(), skies))

    @classmethod
    def concatenate(cls, chunks: list["SampleChunk"]) -> "SampleChunk":
        """Join chunks along the sample axis."""
        def cat(name: str) -> np.ndarray | None:
            parts = [getattr(c, name) for c in chunks]
            return None if parts[0] is None else np.concatenate(parts)

        return cls(cat("data"), cat("var"), cat("dq"), cat("time_s"), cat("signal"), cat("first"), chunks[0].start)

    def crop(self, c0: int, c1: int) -> "SampleChunk":
        """Columns ``c0:c1`` of every plane."""
        cut = (slice(None), slice(None), slice(c0, c1))
        return SampleChunk(
            self.data[cut], self.var[cut], self.dq[cut], self.time_s,
            None if self.signal is None else self.signal[cut],
            None if self.first is None else self.first[cut], self.start,
        )


def load_samples(source: FrameSource, layout: SampleLayout, samples: np.ndarray,
                 read_var: np.ndarray | None = None) -> SampleChunk:
    """Read the frames of ``samples`` (sample indices) and build their sample images.

    A contiguous block of samples is read as one frame range; scattered
    samples (e.g. the reference subset) are gathered with fancy indexing.
    """
    samples = np.asarray(samples, np.int64)
    sig, fst = layout.signal[samples], layout.first[samples]
    contiguous = len(samples) > 0 and np.all(np.diff(samples) == 1)
    if contiguous:
        lo, hi = layout.frame_range(int(samples[0]), int(samples[-1]) + 1)
        frames = source.read(lo, hi)
        sig_local, fst_local = sig - lo, fst - lo
    else:
        needed = np.unique(np.concatenate([sig, fst]))
        frames = source.take(needed)
        sig_local, fst_local = np.searchsorted(needed, sig), np.searchsorted(needed, fst)
    time_s = np.asarray(frames.axis.time_s[sig_local], np.float64)
    start = int(samples[0]) if len(samples) else 0
    if layout.mode == "cds":
        return SampleChunk(frames.data[sig_local].astype(np.float64), frames.var[sig_local].astype(np.float64),
                           frames.dq[sig_local], time_s, start=start)
    s_data = frames.data[sig_local].astype(np.float64)
    f_data = frames.data[fst_local].astype(np.float64)
    var = pair_variance(frames.var[sig_local], frames.var[fst_local], read_var)
    dq = frames.dq[sig_local] | frames.dq[fst_local]
    return SampleChunk(s_data - f_data, var, dq, time_s, s_data, f_data, start)
