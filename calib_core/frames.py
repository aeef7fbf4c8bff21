"""Frame containers: calibrated frames in memory, stored frames read in chunks, frames streamed on the fly.

Detector stages exchange :class:`Frames` (data, variance and data-quality planes
plus per-frame time metadata).  Whole cubes never need to be in memory: a stage
reads its input chunk by chunk from a :class:`FrameSource` (a stored output,
:mod:`calib_core.store`) or a :class:`StreamedSource` (the chunks of an upstream
stage computed on the fly).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from .dq import dropped_frames
from .prefetch import prefetched

if TYPE_CHECKING:  # pragma: no cover
    from .store import StoredOutput, StoreWriter

__all__ = ["AXIS_FIELDS", "ChunkBuffers", "Frames", "FrameAxisMeta", "FrameSource", "StreamedSource"]

#: stored fields of a frame axis (one value per frame)
AXIS_FIELDS = ("frame_time_s", "frame_exptime_s", "frame_read_kind")


@dataclass
class FrameAxisMeta:
    """Per-frame metadata that travels with frames (all arrays length n)."""

    time_s: np.ndarray      #: float64, seconds since the start of the visit
    exptime_s: np.ndarray   #: float64, integration time of the frame (cumulative since reset for reads; increment for CDS)
    read_kind: np.ndarray   #: int8, 0 first read after reset, 1 signal read, 2 CDS difference

    def __len__(self) -> int:
        return len(self.time_s)

    def take(self, sel: Any) -> "FrameAxisMeta":
        return FrameAxisMeta(self.time_s[sel], self.exptime_s[sel], self.read_kind[sel])

    def write(self, writer: "StoreWriter") -> None:
        """Store the axis as the fields :data:`AXIS_FIELDS` of a stage output."""
        writer.put("frame_time_s", np.asarray(self.time_s, np.float64), "s")
        writer.put("frame_exptime_s", np.asarray(self.exptime_s, np.float64), "s")
        writer.put("frame_read_kind", np.asarray(self.read_kind, np.int8), "0 first read, 1 signal read, 2 CDS")

    @classmethod
    def read(cls, output: "StoredOutput") -> "FrameAxisMeta":
        """The axis stored with a frame-stage output (in-memory copies, one value per frame)."""
        f = output.fields
        return cls(np.array(f["frame_time_s"], np.float64), np.array(f["frame_exptime_s"], np.float64),
                   np.array(f["frame_read_kind"], np.int8))


def write_frame_meta(writer: "StoreWriter", axis: FrameAxisMeta, frame_shape: tuple[int, int],
                     wavelength_um: Any = None) -> None:
    """Store the frame axis, and put units, frame shape and (AIRS) wavelengths into ``writer.meta``."""
    axis.write(writer)
    writer.meta["units"] = "electron"
    writer.meta["frame_shape"] = [int(frame_shape[0]), int(frame_shape[1])]
    if wavelength_um is not None:
        writer.meta["wavelength_um"] = np.asarray(wavelength_um, float).tolist()
        writer.meta["wavelength_order"] = "descending (detector columns)"


def copy_frame_meta(source: "FrameSource", writer: "StoreWriter", axis: FrameAxisMeta | None = None) -> None:
    """Carry an input's frame metadata to the output (optionally with a new axis)."""
    write_frame_meta(writer, axis if axis is not None else source.axis, source.frame_shape,
                     source.output.meta.get("wavelength_um"))


@dataclass
class Frames:
    """A chunk of calibrated frames: electrons, variance (e-^2) and dq bits."""

    data: np.ndarray        #: float32 (n, H, W), electrons
    var: np.ndarray         #: float32 (n, H, W), electrons^2
    dq: np.ndarray          #: uint16 (n, H, W), :class:`calib_core.dq.DQ` bits
    axis: FrameAxisMeta     #: per-frame metadata
    start: int = 0          #: index of the first frame in the full sequence

    def __post_init__(self) -> None:
        n = self.data.shape[0]
        if self.var.shape != self.data.shape or self.dq.shape != self.data.shape or len(self.axis) != n:
            raise ValueError(
                f"Frames planes disagree: data {self.data.shape}, var {self.var.shape}, "
                f"dq {self.dq.shape}, axis {len(self.axis)}"
            )

    def __len__(self) -> int:
        return self.data.shape[0]


class ChunkBuffers:
    """Chunk planes ``(data, var, dq)`` handed out to a stream and taken back once its reader let go of them.

    A streamed chain allocates one chunk of planes per chunk of frames.  Fresh
    pages are what costs there: on this project's 2-core VMs, first touching
    the 58 MB of an AIRS-CH0 chunk took 5-18x as long as the compiled ADC pass
    that fills it (0.25-0.9 s against 0.05 s).  So
    the first stream of a chain (ADC) takes its output planes from here, the
    stages after it work in place, and the :class:`StreamedSource` at the end
    gives a chunk back when its reader discards it (it is never read again).

    Only planes lent by this object are taken back, and only as the complete
    triple it lent; the pool never holds a lent buffer (a chunk that is not
    given back is freed as usual) and keeps at most ``keep`` free triples.
    Thread-safe: the producer runs in a prefetch thread.
    """

    def __init__(self, keep: int = 3):
        self.keep = keep
        self._free: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._lent: dict[int, tuple[weakref.ref, weakref.ref, weakref.ref]] = {}
        self._lock = threading.Lock()
        self.n_allocated = self.n_reused = 0        #: counters (tests, benchmarks)

    def take(self, n: int, frame_shape: tuple[int, ...], dq_dtype: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Planes for ``n`` frames: float32 data and var, ``dq_dtype`` dq (contents undefined)."""
        shape = tuple(frame_shape)
        with self._lock:
            self._lent = {k: refs for k, refs in self._lent.items() if refs[0]() is not None}
            bases = next((b for b in self._free if b[0].shape[0] >= n and b[0].shape[1:] == shape
                          and b[2].dtype == dq_dtype), None)
            if bases is not None:
                self._free = [b for b in self._free if b is not bases]
                self.n_reused += 1
            else:
                bases = (np.empty((n, *shape), np.float32), np.empty((n, *shape), np.float32),
                         np.empty((n, *shape), dq_dtype))
                self.n_allocated += 1
            self._lent[id(bases[0])] = tuple(weakref.ref(b) for b in bases)
        return tuple(b[:n] for b in bases)

    def give_back(self, frames: "Frames") -> bool:
        """Take back the planes of ``frames`` if this object lent them (the caller no longer reads them)."""
        bases = tuple(a.base if a.base is not None else a for a in (frames.data, frames.var, frames.dq))
        with self._lock:
            refs = self._lent.get(id(bases[0]))
            if refs is None or any(r() is not b for r, b in zip(refs, bases)):
                return False
            del self._lent[id(bases[0])]
            if len(self._free) < self.keep:
                self._free.append(bases)
        return True


class FrameSource:
    """Read access to a stored frame-stage output (memory-mapped, chunked)."""

    def __init__(self, output: "StoredOutput"):
        self.output = output
        self.data = output.fields["data"]
        self.var = output.fields["var"]
        self.dq = output.fields["dq"]
        self.axis = FrameAxisMeta.read(output)

    @property
    def n_frames(self) -> int:
        return self.data.shape[0]

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self.data.shape[1:])

    def read(self, start: int, stop: int) -> Frames:
        sel = slice(start, stop)
        return Frames(
            np.array(self.data[sel]), np.array(self.var[sel]), np.array(self.dq[sel]),
            self.axis.take(sel), start,
        )

    def take(self, indices: np.ndarray) -> Frames:
        """Frames at arbitrary (sorted or not) indices, in that order."""
        idx = np.asarray(indices, np.int64)
        return Frames(
            np.asarray(self.data[idx]), np.asarray(self.var[idx]), np.asarray(self.dq[idx]),
            self.axis.take(idx), int(idx[0]) if len(idx) else 0,
        )

    def frame_blocks(self, indices: np.ndarray) -> tuple[list[tuple[np.ndarray, ...]], np.ndarray, np.ndarray]:
        """Where the frames at ``indices`` are held, without copying them (see :meth:`StreamedSource.frame_blocks`).

        One block: the stored planes themselves (memory maps), viewed as ``(n, H*W)``.
        """
        idx = np.asarray(indices, np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_frames):
            raise IndexError(f"frame index out of range for {self.n_frames} frames")
        planes = tuple(np.asarray(a).reshape(self.n_frames, -1) for a in (self.data, self.var, self.dq))
        return [planes], np.zeros(idx.size, np.int64), idx

    def iter_chunks(self, chunk_frames: int) -> Iterator[Frames]:
        for start in range(0, self.n_frames, chunk_frames):
            yield self.read(start, min(start + chunk_frames, self.n_frames))

    def discard_before(self, frame: int) -> None:
        """Frames before ``frame`` will not be read again (stored frames stay readable: nothing to do)."""

    def dropped_mask(self, chunk_frames: int = 4096) -> np.ndarray:
        """Frames lost in telemetry (``DROPPED`` on every pixel), from the dq plane."""
        out = np.zeros(self.n_frames, bool)
        for start in range(0, self.n_frames, chunk_frames):
            sl = slice(start, min(start + chunk_frames, self.n_frames))
            out[sl] = dropped_frames(self.dq[sl])
        return out


@dataclass
class _StreamOutput:
    """What a :class:`StreamedSource` offers in place of a stored output's ``meta`` and small fields."""

    meta: dict
    fields: dict[str, np.ndarray]


class StreamedSource:
    """Frames computed on the fly -- an upstream's chunks through a stage stream -- never stored.

    It stands in for a :class:`FrameSource` as the next stage's input:
    ``n_frames``, ``frame_shape``, ``axis``, ``output`` (``meta`` with the
    wavelengths, and the small ``read_var`` field), ``iter_chunks`` (one pass
    in frame order, the upstream's chunk size), and ``read`` / ``take`` served
    from a window of buffered chunks that grows on demand and that the reader
    trims with :meth:`discard_before`, so memory stays bounded by a few chunks.
    Reading a frame already discarded or iterated past is an error, never a
    silent gap.  Every frame that passes is checked for telemetry drops, and
    the frame ``preview_index`` is kept (``preview``) so the stage that was
    streamed still shows a frame in its diagnostics.

    Parameters
    ----------
    stream : calib_core.stages.base.FrameStream
        The stage applied to each chunk.
    chunks : iterator
        The upstream's chunks, in frame order (raw ``(first, uint16 frames)``
        for the ADC, :class:`Frames` otherwise).
    preview_index : int, optional
        Frame to keep as ``preview``.
    prefetch : bool
        Compute the next chunk (this stream and everything upstream of it) in a
        background thread while the reader works on the current one
        (:func:`calib_core.prefetch.prefetched`; the kernels release the GIL, so
        the two overlap on two cores).  The chunks and every counter come out
        the same; one or two more chunks are in memory.
    buffers : ChunkBuffers, optional
        The pool the chain's first stream takes its planes from: chunks the
        reader discards go back to it.
    """

    data = var = dq = None      #: no memory maps behind these frames (``release_pages`` skips them)

    def __init__(self, stream: Any, chunks: Iterator[Any], preview_index: int | None = None, prefetch: bool = False,
                 buffers: ChunkBuffers | None = None):
        self.stream = stream
        self._buffers = buffers              #: where discarded chunks go back to (their producer's pool)
        processed = (stream.process(chunk) for chunk in chunks)
        self._chunks = prefetched(processed, name="stream-prefetch") if prefetch else processed
        self._buf: list[Frames] = []
        self._next = 0                       #: first frame not pulled from upstream yet
        self._floor = 0                      #: frames before this were discarded
        self.n_frames = int(stream.n_frames)
        self.axis = stream.axis
        self.preview_index = preview_index
        self.preview: np.ndarray | None = None
        self._dropped = np.zeros(self.n_frames, bool)
        if not self._pull():
            raise ValueError("streamed input has no frames")
        self.frame_shape = tuple(stream.frame_shape)
        self.output = _StreamOutput({"wavelength_um": stream.wavelength_um}, {"read_var": stream.read_var})

    def _pull(self) -> bool:
        out = next(self._chunks, None)
        if out is None:
            self._chunks = iter(())          # let go of the upstream (reader, its file and threads) at once
            return False
        if out.start != self._next:
            raise RuntimeError(f"stream chunk starts at frame {out.start}, expected {self._next}")
        stop = out.start + len(out)
        self._dropped[out.start:stop] = dropped_frames(out.dq)
        if self.preview_index is not None and out.start <= self.preview_index < stop:
            self.preview = np.array(out.data[self.preview_index - out.start:self.preview_index - out.start + 1])
        self._next = stop
        self._buf.append(out)
        return True

    def iter_chunks(self, chunk_frames: int = 0) -> Iterator[Frames]:
        """Yield the frames once, front to back, in the upstream's chunks (``chunk_frames`` is not used)."""
        if self._buf and self._buf[0].start != self._floor:
            raise RuntimeError("streamed input: iter_chunks after frames were discarded")
        while self._buf or self._pull():
            chunk = self._buf.pop(0)
            self._floor = chunk.start + len(chunk)
            yield chunk

    def _fill_to(self, idx: np.ndarray) -> None:
        """Check ``idx`` is still readable and pull upstream chunks until all of it is buffered."""
        if idx.size == 0:
            raise ValueError("streamed input: no frames asked for")
        lo, hi = int(idx.min()), int(idx.max())
        if lo < self._floor:
            raise RuntimeError(f"streamed input: frame {lo} was already discarded (frames before "
                               f"{self._floor} are gone)")
        if hi >= self.n_frames:
            raise IndexError(f"frame {hi} out of range for {self.n_frames} frames")
        while self._next <= hi:
            if not self._pull():
                raise RuntimeError(f"streamed input ended at frame {self._next}, frame {hi} was asked for")

    def frame_blocks(self, indices: np.ndarray) -> tuple[list[tuple[np.ndarray, ...]], np.ndarray, np.ndarray]:
        """Where the frames at ``indices`` are held, without copying them.

        Returns
        -------
        blocks : list of (data, var, dq)
            The buffered chunks' planes viewed as ``(n, H*W)``.
        block, row : ndarray of int64
            For each index, its block and its row in that block.
        """
        idx = np.asarray(indices, np.int64)
        self._fill_to(idx)
        starts = np.array([chunk.start for chunk in self._buf], np.int64)
        block = np.searchsorted(starts, idx, side="right") - 1
        blocks = [tuple(a.reshape(len(chunk), -1) for a in (chunk.data, chunk.var, chunk.dq)) for chunk in self._buf]
        return blocks, block, idx - starts[block]

    def take(self, indices: np.ndarray) -> Frames:
        """Frames at ``indices`` (any order), pulling upstream chunks as far as needed."""
        idx = np.asarray(indices, np.int64)
        blocks, block, row = self.frame_blocks(idx)
        planes = [np.empty((idx.size, *a.shape[1:]), a.dtype) for a in blocks[0]]
        for b in np.unique(block):
            sel = np.flatnonzero(block == b)
            for out, held in zip(planes, blocks[b]):
                out[sel] = held[row[sel]]
        shape = (idx.size, *self.frame_shape)
        return Frames(*(p.reshape(shape) for p in planes), self.axis.take(idx), int(idx[0]))

    def read(self, start: int, stop: int) -> Frames:
        return self.take(np.arange(start, stop))

    def discard_before(self, frame: int) -> None:
        """Frames before ``frame`` will not be read again: drop the chunks wholly before it."""
        while self._buf and self._buf[0].start + len(self._buf[0]) <= frame:
            self._give_back(self._buf.pop(0))
        self._floor = max(self._floor, frame)

    def _give_back(self, chunk: Frames) -> None:
        if self._buffers is not None:
            self._buffers.give_back(chunk)

    def exhaust(self) -> None:
        """Run the rest of the upstream through the stream without keeping it (every frame seen once)."""
        while self._buf or self._pull():
            while self._buf:
                self._give_back(self._buf.pop(0))
        self._floor = self._next

    def dropped_mask(self, chunk_frames: int = 0) -> np.ndarray:
        """Frames lost in telemetry; the rest of the stream is run first (call it after the last read)."""
        self.exhaust()
        return self._dropped.copy()
