"""Frame containers and the on-disk stage store.

Detector stages exchange :class:`Frames` (data, variance and data-quality planes
plus per-frame time metadata).  Whole cubes never need to be in memory: a stage
reads its input chunk by chunk from a :class:`FrameSource` and writes its
output through a :class:`StoreWriter`, which fills ``.npy`` memory maps in a
temporary directory and moves them into place only when the stage completed
(:meth:`StoreWriter.commit`), so an interrupted or failed stage never leaves
files that look complete.

On-disk layout of one stage output (``run_dir/calib/<stage>/<instrument>/``)::

    data.npy  var.npy  dq.npy      # frame stages: (n_frames, H, W) float32/float32/uint16
    read_var.npy                   # frame stages: (H, W) read-noise variance of one output frame
                                   # (CDS needs it: its variance counts both reads' read noise plus
                                   # the Poisson variance of the increment only)
    <field>.npy                    # series stages: photometry_flux, ... (see meta.json)
    meta.json                      # written last: fields, shapes, dtypes, units,
                                   # frame times, wavelength order, cache key

A detector stage streamed into the next one (:class:`StreamedSource`; its
``cache.write_intermediate`` is false) stores everything but the three frame
planes, plus ``preview.npy`` -- the one frame its diagnostics show -- and
``streamed_into`` / ``preview_index`` in its meta.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .dq import DQ_DTYPE, dropped_frames
from .prefetch import prefetched

__all__ = [
    "Frames",
    "FrameAxisMeta",
    "FramePlane",
    "FrameSource",
    "StreamedSource",
    "StoredOutput",
    "StoreWriter",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "load_output",
]

META_NAME = "meta.json"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and an atomic rename."""
    atomic_write_bytes(path, text.encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


#: lists longer than this are written on one line (per-frame axes run to 135000 values)
_JSON_INLINE_LIST = 32
_JSON_SCALARS = {int, float, bool, str, type(None)}


def dumps_json(obj: Any) -> str:
    """``obj`` as indented JSON (numpy scalars/arrays allowed), long lists of numbers kept on one line each.

    ``json.dumps`` with ``indent`` runs the pure-Python encoder over every
    element (~1.8 s for the frame axes of a full FGS1 visit); long lists are
    encoded by the C encoder instead and spliced in.
    """
    long_lists: list[str] = []
    plain = False                      # a string with a NUL in it could pass for a marker: no splicing then

    def shrink(o: Any) -> Any:
        nonlocal plain
        if isinstance(o, str) and "\x00" in o:
            plain = True
        if isinstance(o, dict):
            plain = plain or any("\x00" in str(k) for k in o)
            return {k: shrink(v) for k, v in o.items()}
        if isinstance(o, np.ndarray) and o.ndim >= 1:
            o = o.tolist()
        if isinstance(o, (list, tuple)):
            if len(o) > _JSON_INLINE_LIST and set(map(type, o)) <= _JSON_SCALARS:
                long_lists.append(json.dumps(o, default=_json_default, allow_nan=True))
                return f"\x00{len(long_lists) - 1}\x00"
            return [shrink(v) for v in o]
        return o

    shrunk = shrink(obj)
    if plain:
        return json.dumps(obj, indent=1, default=_json_default, allow_nan=True)
    text = json.dumps(shrunk, indent=1, default=_json_default, allow_nan=True)
    if long_lists:
        parts = text.split('"\\u0000')
        text = parts[0] + "".join(long_lists[int(p[:p.index("\\u0000")])] + p[p.index("\\u0000") + 7:]
                                  for p in parts[1:])
    return text


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (:func:`dumps_json`)."""
    atomic_write_text(path, dumps_json(obj) + "\n")


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

    def to_json(self) -> dict:
        return {
            "frame_time_s": np.asarray(self.time_s, float).tolist(),
            "frame_exptime_s": np.asarray(self.exptime_s, float).tolist(),
            "frame_read_kind": np.asarray(self.read_kind, int).tolist(),
        }

    @classmethod
    def from_json(cls, meta: dict) -> "FrameAxisMeta":
        return cls(
            np.asarray(meta["frame_time_s"], np.float64),
            np.asarray(meta["frame_exptime_s"], np.float64),
            np.asarray(meta["frame_read_kind"], np.int8),
        )


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


class FrameSource:
    """Read access to a stored frame-stage output (memory-mapped, chunked)."""

    def __init__(self, output: "StoredOutput"):
        self.output = output
        self.data = output.fields["data"]
        self.var = output.fields["var"]
        self.dq = output.fields["dq"]
        self.axis = FrameAxisMeta.from_json(output.meta)

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
    """

    data = var = dq = None      #: no memory maps behind these frames (``release_pages`` skips them)

    def __init__(self, stream: Any, chunks: Iterator[Any], preview_index: int | None = None, prefetch: bool = False):
        self.stream = stream
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
            self._buf.pop(0)
        self._floor = max(self._floor, frame)

    def exhaust(self) -> None:
        """Run the rest of the upstream through the stream without keeping it (every frame seen once)."""
        self._buf.clear()
        while self._pull():
            self._buf.clear()
        self._floor = self._next

    def dropped_mask(self, chunk_frames: int = 0) -> np.ndarray:
        """Frames lost in telemetry; the rest of the stream is run first (call it after the last read)."""
        self.exhaust()
        return self._dropped.copy()


@dataclass
class StoredOutput:
    """A committed stage output: lazily memory-mapped fields and its meta."""

    path: Path
    meta: dict
    fields: dict[str, np.ndarray]

    def frames(self) -> FrameSource:
        return FrameSource(self)


def load_output(path: str | os.PathLike, mmap: bool = True) -> StoredOutput | None:
    """Load a committed stage output, or ``None`` when absent or incomplete."""
    path = Path(path)
    meta_path = path / META_NAME
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        fields = {
            name: np.load(path / f"{name}.npy", mmap_mode="r" if mmap else None)
            for name in meta.get("fields", {})
        }
    except (OSError, ValueError):
        return None
    return StoredOutput(path, meta, fields)


class FramePlane:
    """A writable ``.npy`` frame plane ``(n, H, W)`` on disk, filled by whole-frame slices.

    Detector stages write their planes front to back, a chunk of frames at a
    time.  Through a shared memory map every fresh 4 KiB page costs a write
    fault (measured: ~340 MB/s even on tmpfs, most of a simple stage's time);
    ``plane[a:b] = frames`` here is one ``pwrite`` into the page cache instead
    (several GB/s).  Anything else -- reads, fancy-index writes (cosmic-ray
    repairs, flag updates) -- goes through a memory map of the same file,
    opened on first use; Linux keeps both views coherent (one page cache).
    The file starts as a sparse, zero-filled ``.npy`` like
    :func:`numpy.lib.format.open_memmap` gives.  Where ``os.pwrite`` does not
    exist (Windows), every write goes through the memory map.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple, dtype: Any):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.frame_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        with open(self.path, "wb") as fh:
            np.lib.format.write_array_header_2_0(fh, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                      "fortran_order": False, "shape": self.shape})
            self.offset = fh.tell()
            fh.truncate(self.offset + self.frame_bytes * self.shape[0])
        self._fd: int | None = os.open(self.path, os.O_RDWR)
        self._map: np.memmap | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def _mapped(self) -> np.memmap:
        if self._map is None:
            self._map = np.memmap(self.path, self.dtype, "r+", offset=self.offset, shape=self.shape)
        return self._map

    def __getitem__(self, key: Any) -> np.ndarray:
        return self._mapped()[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(key, slice) and key.step in (None, 1) and self._fd is not None and hasattr(os, "pwrite"):
            start, stop, _ = key.indices(self.shape[0])
            if stop <= start:
                return
            block = np.ascontiguousarray(np.broadcast_to(np.asarray(value, self.dtype),
                                                         (stop - start, *self.shape[1:])))
            view = memoryview(block).cast("B")
            pos, done = self.offset + start * self.frame_bytes, 0
            while done < len(view):
                done += os.pwrite(self._fd, view[done:], pos + done)
            return
        self._mapped()[key] = value

    def read_into(self, start: int, out: np.ndarray) -> np.ndarray:
        """Copy frames ``start:start + len(out)`` into ``out`` (C-contiguous, this dtype); return ``out``.

        One ``pread`` from the page cache: no page of the file gets mapped, so a
        pass that re-reads the plane chunk by chunk into one buffer costs a copy,
        not a page fault per 4 KiB.
        """
        stop = start + len(out)
        if not 0 <= start <= stop <= self.shape[0] or out.shape[1:] != self.shape[1:] or out.dtype != self.dtype:
            raise ValueError(f"{self.path.name}: cannot read frames {start}:{stop} of {self.shape} {self.dtype} "
                             f"into {out.shape} {out.dtype}")
        if self._fd is None or not hasattr(os, "preadv") or not out.flags.c_contiguous:
            out[...] = self._mapped()[start:stop]
            return out
        view = memoryview(out).cast("B")
        pos, done = self.offset + start * self.frame_bytes, 0
        while done < len(view):
            got = os.preadv(self._fd, [view[done:]], pos + done)
            if got <= 0:
                raise OSError(f"{self.path}: short read at byte {pos + done}")
            done += got
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = np.array(self._mapped())
        return arr if dtype is None else arr.astype(dtype)

    @property
    def mapped(self) -> np.memmap | None:
        """The read/scatter memory map when it was opened, else None (``release_pages`` uses it)."""
        return self._map

    def close(self) -> None:
        """Close both views (the file stays).

        No ``msync``: both views write into the page cache, which every later
        reader of the file sees (the commit's rename is what makes an output
        visible).  Syncing the map would force the whole plane -- the pwritten
        frames too -- out to disk before the stage could go on.
        """
        if self._map is not None:
            self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class StoreWriter:
    """Write a stage output into a temporary directory, then commit atomically.

    Usage::

        with StoreWriter(final_dir) as w:
            data = w.create("data", (n, H, W), np.float32, unit="electron")
            data[a:b] = ...
            w.put("photometry_flux", flux, unit="electron")
            w.commit(meta)            # moves tmp -> final_dir; without it nothing is kept
    """

    def __init__(self, final_dir: str | os.PathLike):
        self.final_dir = Path(final_dir)
        self.final_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = self.final_dir.with_name(f".{self.final_dir.name}.{uuid.uuid4().hex}.tmp")
        self.tmp_dir.mkdir()
        self.fields: dict[str, dict] = {}
        #: stage-provided meta (frame axis, units, wavelength order...); merged at commit
        self.meta: dict[str, Any] = {}
        self._maps: dict[str, Any] = {}
        self.committed = False

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def create(self, name: str, shape: tuple, dtype: Any, unit: str = "") -> np.ndarray:
        """Create a writable, zero-filled ``.npy`` memory map for field ``name``."""
        arr = np.lib.format.open_memmap(self.tmp_dir / f"{name}.npy", mode="w+", dtype=dtype, shape=tuple(shape))
        self._maps[name] = arr
        self.fields[name] = {"shape": list(shape), "dtype": np.dtype(dtype).name, "unit": unit}
        return arr

    def create_plane(self, name: str, shape: tuple, dtype: Any, unit: str = "") -> FramePlane:
        """Create a zero-filled :class:`FramePlane` for field ``name`` (written by frame slices)."""
        plane = FramePlane(self.tmp_dir / f"{name}.npy", shape, dtype)
        self._maps[name] = plane
        self.fields[name] = {"shape": list(plane.shape), "dtype": plane.dtype.name, "unit": unit}
        return plane

    def create_frames(self, n: int, frame_shape: tuple[int, int]) -> tuple[FramePlane, FramePlane, FramePlane]:
        """The three frame planes ``data``, ``var``, ``dq``."""
        shape = (n, *frame_shape)
        return (
            self.create_plane("data", shape, np.float32, "electron"),
            self.create_plane("var", shape, np.float32, "electron2"),
            self.create_plane("dq", shape, DQ_DTYPE, "bitmask (calib_core.dq.DQ)"),
        )

    def put(self, name: str, array: np.ndarray, unit: str = "") -> None:
        """Store a small in-memory array as field ``name``."""
        array = np.asarray(array)
        np.save(self.tmp_dir / f"{name}.npy", array)
        self.fields[name] = {"shape": list(array.shape), "dtype": array.dtype.name, "unit": unit}

    def commit(self, meta: dict) -> StoredOutput:
        """Close the planes (small maps are flushed), write ``meta.json`` last and move the directory into place."""
        for arr in self._maps.values():
            if isinstance(arr, FramePlane):
                arr.close()
            else:
                arr.flush()
        self._maps.clear()
        meta = {**self.meta, **meta, "fields": self.fields}
        atomic_write_json(self.tmp_dir / META_NAME, meta)
        if self.final_dir.exists():
            trash = self.final_dir.with_name(f".{self.final_dir.name}.{uuid.uuid4().hex}.old")
            os.replace(self.final_dir, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(self.tmp_dir, self.final_dir)
        self.committed = True
        out = load_output(self.final_dir)
        assert out is not None
        return out

    def close(self) -> None:
        """Discard everything not committed."""
        for arr in self._maps.values():
            if isinstance(arr, FramePlane):
                arr.close()
        self._maps.clear()
        if not self.committed and self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
