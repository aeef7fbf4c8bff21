"""The on-disk stage store: atomic files, frame planes, committed stage outputs.

A stage writes its output through a :class:`StoreWriter`, which fills ``.npy``
files in a temporary directory and moves them into place only when the stage
completed (:meth:`StoreWriter.commit`), so an interrupted or failed stage never
leaves files that look complete.

On-disk layout of one stage output (``run_dir/calib/<stage>/<instrument>/``)::

    data.npy  var.npy  dq.npy      # frame stages: (n_frames, H, W) float32/float32/uint16
    frame_time_s.npy               # frame stages: per-frame time (s), integration time (s) and read kind
    frame_exptime_s.npy            #   (0 first read, 1 signal read, 2 CDS difference), one value per frame
    frame_read_kind.npy
    read_var.npy                   # frame stages: (H, W) read-noise variance of one output frame
                                   # (CDS needs it: its variance counts both reads' read noise plus
                                   # the Poisson variance of the increment only)
    <field>.npy                    # series stages: photometry_flux, ... (see meta.json)
    meta.json                      # fields, shapes, dtypes, units, wavelength order, cache key, metrics
    checksums.json                 # written last: the xxh3-128 digest of every file above

The directory appears (one rename) only when the stage committed.  Before the
runner reuses a stored output it checks every file against ``checksums.json``
(:func:`verify_output`): an output edited, truncated or corrupted on disk is
recomputed, never used.

A detector stage streamed into the next one (:class:`calib_core.frames.StreamedSource`;
its ``cache.write_intermediate`` is false) stores everything but the three
frame planes, plus ``preview.npy`` -- the one frame its diagnostics show -- and
``streamed_into`` / ``preview_index`` in its meta.

A detector stage whose planes are not kept but that cannot stream into its
successor (CDS, whose cosmic-ray pass reads its own planes twice; the fast
profile's ADC, read by photometry) writes them under ``run_dir/.scratch``
and, once the stage reading them committed, :func:`release_frames` replaces
them by the same ``preview.npy`` (``planes_released`` in its meta): no frame
plane outlives the run.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from .dq import DQ_DTYPE

__all__ = [
    "CHECKSUMS_NAME",
    "META_NAME",
    "FramePlane",
    "StoredOutput",
    "StoreWriter",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "file_digest",
    "load_output",
    "release_frames",
    "release_pages",
    "verify_output",
]

META_NAME = "meta.json"
_FIELD_NAME = re.compile(r"[A-Za-z0-9_]+")
CHECKSUMS_NAME = "checksums.json"


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


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (numpy scalars and arrays allowed)."""
    atomic_write_text(path, json.dumps(obj, indent=1, default=_json_default, allow_nan=True) + "\n")


@dataclass
class StoredOutput:
    """A committed stage output: lazily memory-mapped fields and its meta."""

    path: Path
    meta: dict
    fields: dict[str, np.ndarray]

    def frames(self) -> "FrameSource":
        """The frames of a frame-stage output, read in chunks."""
        from .frames import FrameSource

        return FrameSource(self)


def file_digest(path: str | os.PathLike) -> str:
    """xxh3-128 digest of a file's content (fast: the page cache's speed, not a cryptographic hash)."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def verify_output(path: str | os.PathLike) -> str | None:
    """Why a committed output cannot be trusted (None: every file matches ``checksums.json``)."""
    path = Path(path)
    try:
        sums = json.loads((path / CHECKSUMS_NAME).read_text())
    except (OSError, ValueError):
        return f"{path / CHECKSUMS_NAME}: missing or unreadable"
    meta_fields = {}
    try:
        meta_fields = json.loads((path / META_NAME).read_text()).get("fields", {})
    except (OSError, ValueError):
        pass
    expected = {META_NAME, *(f"{name}.npy" for name in meta_fields)}
    if set(sums) != expected:
        return f"{path}: checksums.json lists {sorted(sums)}, the output has {sorted(expected)}"
    for name, digest in sums.items():
        try:
            if file_digest(path / name) != digest:
                return f"{path / name}: content differs from its checksum (edited or corrupted)"
        except OSError as exc:
            return f"{path / name}: {exc.strerror or exc}"
    return None


def load_output(path: str | os.PathLike, mmap: bool = True) -> StoredOutput | None:
    """Load a committed stage output, or ``None`` when absent or incomplete."""
    path = Path(path)
    meta_path = path / META_NAME
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        names = list(meta.get("fields", {}))
        if not all(isinstance(n, str) and _FIELD_NAME.fullmatch(n) for n in names):
            return None          # a field name is a plain identifier: nothing outside the directory is read
        fields = {name: np.load(path / f"{name}.npy", mmap_mode="r" if mmap else None) for name in names}
    except (OSError, ValueError, AttributeError):
        return None
    return StoredOutput(path, meta, fields)


FRAME_PLANES = ("data", "var", "dq")


def release_frames(path: str | os.PathLike, preview_index: int) -> StoredOutput | None:
    """Drop the frame planes of a committed output, keeping frame ``preview_index`` as ``preview``.

    The output stays a valid committed output (its ``meta.json`` and
    ``checksums.json`` list the remaining files, ``planes_released`` and
    ``preview_index`` say what happened) whose diagnostics show the preview
    frame (:func:`calib_core.diagnostics.frame_image`).  The new meta and
    checksums are written atomically before any plane is removed: a crash in
    between leaves files that :func:`verify_output` rejects, so the stage is
    recomputed, never half-used.  Returns the updated output (None when
    ``path`` holds no committed output or no planes).
    """
    path = Path(path)
    out = load_output(path)
    if out is None or "data" not in out.fields:
        return out
    n = out.fields["data"].shape[0]
    index = int(min(max(preview_index, 0), max(n - 1, 0)))
    preview = np.array(out.fields["data"][index:index + 1])
    del out
    tmp = path / f".preview.{uuid.uuid4().hex}.npy"
    np.save(tmp, preview)
    os.replace(tmp, path / "preview.npy")
    meta = json.loads((path / META_NAME).read_text())
    fields = {k: v for k, v in meta.get("fields", {}).items() if k not in FRAME_PLANES}
    fields["preview"] = {"shape": list(preview.shape), "dtype": preview.dtype.name, "unit": "electron"}
    meta.update(fields=fields, planes_released=True, preview_index=index)
    atomic_write_json(path / META_NAME, meta)
    sums = json.loads((path / CHECKSUMS_NAME).read_text())
    sums = {k: v for k, v in sums.items() if k not in {f"{p}.npy" for p in FRAME_PLANES}}
    sums.update({META_NAME: file_digest(path / META_NAME), "preview.npy": file_digest(path / "preview.npy")})
    atomic_write_json(path / CHECKSUMS_NAME, sums)
    for plane in FRAME_PLANES:
        with contextlib.suppress(FileNotFoundError):
            (path / f"{plane}.npy").unlink()
    return load_output(path)


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

    def create_frames(self, n: int, frame_shape: tuple[int, int]) -> tuple["FramePlane", "FramePlane", "FramePlane"]:
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
        """Close the planes, write ``meta.json`` and ``checksums.json`` and move the directory into place."""
        for arr in self._maps.values():
            if isinstance(arr, FramePlane):
                arr.close()
            else:
                arr.flush()
        self._maps.clear()
        meta = {**self.meta, **meta, "fields": self.fields}
        atomic_write_json(self.tmp_dir / META_NAME, meta)
        sums = {name: file_digest(self.tmp_dir / name) for name in [META_NAME, *(f"{f}.npy" for f in self.fields)]}
        atomic_write_json(self.tmp_dir / CHECKSUMS_NAME, sums)
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


def release_pages(*arrays: np.ndarray, frames: slice | None = None) -> None:
    """Drop the resident pages of memory-mapped arrays from this process.

    Streaming through a ``.npy`` memory map keeps every touched page mapped, so
    the RSS would grow to the size of the file.  ``MADV_DONTNEED`` on a shared
    file mapping only unmaps them (dirty pages stay in the page cache and are
    written back), which keeps the RSS bounded by the chunk size.

    Parameters
    ----------
    *arrays : ndarray or FramePlane
        Memory-mapped arrays or views of them, or :class:`calib_core.frames.FramePlane`
        (its read map, when open); other arrays are ignored.
    frames : slice, optional
        Only the pages of frames ``frames.start:frames.stop`` (axis 0) of a
        top-level ``numpy.memmap`` -- much cheaper than the whole mapping when
        called once per chunk (views release their whole mapping).
    """
    if not hasattr(mmap, "MADV_DONTNEED"):
        return
    for arr in arrays:
        if isinstance(arr, FramePlane):
            if arr.mapped is None:
                continue
            arr = arr.mapped
        mm = arr
        while mm is not None and not isinstance(mm, mmap.mmap):
            mm = getattr(mm, "base", None)
        if mm is None or mm.closed:
            continue
        if frames is None or arr.base is not mm:
            mm.madvise(mmap.MADV_DONTNEED)
            continue
        head = int(getattr(arr, "offset", 0)) % mmap.ALLOCATIONGRANULARITY
        begin = head + max(frames.start or 0, 0) * arr.strides[0]
        end = min(len(mm), head + min(frames.stop, len(arr)) * arr.strides[0])
        begin -= begin % mmap.PAGESIZE
        if end > begin:
            mm.madvise(mmap.MADV_DONTNEED, begin, end - begin)
