"""Helpers shared by the detector stages (ADC, dark, flat, CDS) and photometry.

Calibration-map validation, dq tallies over streamed chunks, non-finite checks,
frame metadata, series decimation for plots, and page release for streamed
memory maps.
"""

from __future__ import annotations

import math
import mmap
from typing import Any, Iterable

import numpy as np

from ..dq import DO_NOT_USE_MASK, DQ, DQ_DTYPE
from ..kernels import dq_tally
from ..frames import FrameAxisMeta, FramePlane, FrameSource, StoredOutput, StoreWriter, StreamedSource

__all__ = [
    "MAD_TO_SIGMA",
    "N_DN_VALUES",
    "DqTally",
    "check_finite_input",
    "copy_frame_meta",
    "decimate",
    "flag_nonfinite",
    "frame_image",
    "input_read_var",
    "map_label",
    "report_bad_input",
    "release_pages",
    "run_stream",
    "stream_chain",
    "usable_frame_means",
    "validate_map",
    "write_frame_meta",
]

#: ``(1.4826 * MAD)`` estimates a Gaussian standard deviation
MAD_TO_SIGMA = 1.4826
#: number of values a uint16 can take (raw DN histogram and dq tally length)
N_DN_VALUES = 1 << 16


class DqTally:
    """Per-bit pixel counts accumulated chunk by chunk.

    ``counts()`` equals :func:`calib_core.dq.count_bits` of the concatenated
    chunks, at the cost of one pass over each chunk; the detector-stage kernels
    add into ``hist`` directly.
    """

    def __init__(self) -> None:
        self.hist = np.zeros(N_DN_VALUES, np.int64)

    def add(self, dq: np.ndarray) -> None:
        """Add the dq bits of one chunk."""
        dq_tally(np.ascontiguousarray(dq, DQ_DTYPE).reshape(-1), self.hist)

    def counts(self) -> dict[str, int]:
        """Pixel-frames with each bit set, by bit name (zeros included)."""
        values = np.arange(N_DN_VALUES)
        return {flag.name: int(self.hist[(values & flag.value) != 0].sum()) for flag in DQ}


def map_label(calibration: Any, instrument: str, name: str) -> str:
    """Human-readable name of a calibration map, with its file when known."""
    paths = getattr(calibration, "paths", None) or {}
    path = paths.get(name)
    return f"{instrument} calibration map '{name}'" + (f" ({path})" if path else "")


def validate_map(array: Any, *, label: str, frame_shape: tuple[int, int], check_shape: bool,
                 require_finite: bool, leading: bool = False) -> np.ndarray:
    """Check a calibration map against the frames it calibrates.

    Parameters
    ----------
    array : array_like
        The map; shape ``frame_shape`` (or ``(K, *frame_shape)`` with ``leading``).
    label : str
        Name used in error messages (see :func:`map_label`).
    frame_shape : tuple of int
        ``(H, W)`` of the frames.
    check_shape, require_finite : bool
        ``validation.check_shape_compatibility`` / ``validation.require_finite_inputs``.
    leading : bool
        The map has one leading axis (e.g. polynomial coefficients).

    Returns
    -------
    ndarray
        The map as an array.

    Raises
    ------
    ValueError
        Naming the map, its shape and the frame shape, or its count of non-finite values.
    """
    arr = np.asarray(array)
    if check_shape:
        ok = arr.ndim == 3 and arr.shape[1:] == tuple(frame_shape) if leading else arr.shape == tuple(frame_shape)
        if not ok:
            want = f"(K, {frame_shape[0]}, {frame_shape[1]})" if leading else str(tuple(frame_shape))
            raise ValueError(f"{label}: shape {arr.shape} does not match the frames; expected {want}")
    if require_finite and arr.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise ValueError(f"{label}: {bad} non-finite value(s) (validation.require_finite_inputs is true)")
    return arr


def flag_nonfinite(data: np.ndarray, dq: np.ndarray) -> int:
    """Flag non-finite values on usable pixels ``NONFINITE`` (in place); return their count."""
    finite = np.isfinite(data)
    if finite.all():
        return 0
    bad = ~finite & ((dq & DO_NOT_USE_MASK) == 0)
    dq[bad] |= int(DQ.NONFINITE)
    return int(np.count_nonzero(bad))


def usable_frame_means(data: np.ndarray, dq: np.ndarray) -> np.ndarray:
    """Mean of each frame over its pixels not flagged ``DO_NOT_USE`` (NaN for a frame without any)."""
    good = (dq & DO_NOT_USE_MASK) == 0
    n = len(data)
    count = good.reshape(n, -1).sum(axis=1)
    total = np.where(good, data, 0).reshape(n, -1).sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def check_finite_input(frames: Any, *, stage: str, key: str, require: bool) -> int:
    """Count non-finite input values on usable pixels; raise when ``require``.

    Raises
    ------
    ValueError
        Naming the stage, the input key, the count and the first frame concerned.
    """
    data, dq = frames.data, frames.dq
    finite = np.isfinite(data)
    if finite.all():
        return 0
    bad = ~finite & ((dq & DO_NOT_USE_MASK) == 0)
    first = int(frames.start + np.argmax(bad.reshape(len(data), -1).any(axis=1)))
    return report_bad_input(int(np.count_nonzero(bad)), first, stage=stage, key=key, require=require)


def report_bad_input(count: int, first_frame: int, *, stage: str, key: str, require: bool) -> int:
    """Return a count of non-finite input values on usable pixels; raise when there are some and ``require``.

    Raises
    ------
    ValueError
        Naming the stage, the input key, the count and the first frame concerned.
    """
    count = int(count)
    if count and require:
        raise ValueError(f"{stage}: input '{key}' has {count} non-finite value(s) on usable pixels "
                         f"(first in frame {int(first_frame)}); validation.require_finite_inputs is true")
    return count


def write_frame_meta(writer: StoreWriter, axis: FrameAxisMeta, frame_shape: tuple[int, int],
                     wavelength_um: Any = None) -> None:
    """Put the frame axis, units, frame shape and (AIRS) wavelengths into ``writer.meta``."""
    writer.meta.update(axis.to_json())
    writer.meta["units"] = "electron"
    writer.meta["frame_shape"] = [int(frame_shape[0]), int(frame_shape[1])]
    if wavelength_um is not None:
        writer.meta["wavelength_um"] = np.asarray(wavelength_um, float).tolist()
        writer.meta["wavelength_order"] = "descending (detector columns)"


def copy_frame_meta(source: FrameSource, writer: StoreWriter, axis: FrameAxisMeta | None = None) -> None:
    """Carry an input's frame metadata to the output (optionally with a new axis)."""
    meta = source.output.meta
    write_frame_meta(writer, axis if axis is not None else source.axis, source.frame_shape, meta.get("wavelength_um"))


def input_read_var(source: FrameSource, calibration: Any, instrument: str) -> tuple[np.ndarray, str]:
    """Read-noise variance per read (e-^2, in the input's units) and where it came from.

    Detector stages carry a ``read_var`` field (ADC: ``read^2``; flat divides it
    by ``flat^2``).  Without it (an input not written by these stages) the
    calibration ``read`` map squared is used.
    """
    field = source.output.fields.get("read_var")
    if field is not None:
        return np.asarray(field, np.float32), "upstream"
    read = validate_map(calibration.read, label=map_label(calibration, instrument, "read"),
                        frame_shape=source.frame_shape, check_shape=True, require_finite=False)
    return np.square(read.astype(np.float32)), "calibration"


def decimate(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[list[float], list[float]]:
    """Block means of ``(x, y)`` so that at most ``max_points`` remain (non-finite ``y`` dropped).

    Returns plain lists, ready for JSON metrics and ``curve`` plot data.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    block = max(1, math.ceil(len(y) / max_points))
    n = len(y) // block * block
    if n == 0:
        return x.tolist(), y.tolist()
    xs = x[:n].reshape(-1, block).mean(axis=1)
    ys = y[:n].reshape(-1, block).mean(axis=1)
    if n < len(y):
        xs = np.append(xs, x[n:].mean())
        ys = np.append(ys, y[n:].mean())
    return xs.tolist(), ys.tolist()


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


def run_stream(stream: Any, chunks: Iterable[Any], writer: StoreWriter, ctx: Any,
               release: tuple[Any, ...] = ()) -> dict:
    """Feed ``chunks`` through a :class:`calib_core.stages.base.FrameStream` into ``writer``'s frame planes.

    This is a streamable stage's ``run``: the planes are created at the first
    output chunk (when the frame shape is known), each chunk is written at its
    frame position, the pages of ``release`` (the input's memory maps) are
    dropped behind it, and the stream's ``finish`` adds the small fields and
    returns the metrics.
    """
    planes = None
    n = max(int(stream.n_frames), 1)
    for chunk in chunks:
        out = stream.process(chunk)
        if planes is None:
            planes = writer.create_frames(stream.n_frames, stream.frame_shape)
        sl = slice(out.start, out.start + len(out))
        planes[0][sl], planes[1][sl], planes[2][sl] = out.data, out.var, out.dq
        release_pages(*release, frames=sl)
        ctx.report(sl.stop / n, f"{sl.stop}/{n} frames")
    return stream.finish(writer)


def stream_chain(stages: Iterable[tuple[Any, Any, Any]], inp: Any, chunk_frames: int) -> list[tuple[Any, Any]]:
    """Open ``(stage, cfg, ctx)`` in order as streams, each reading the previous one; nothing runs yet.

    Returns ``[(stream, source)]``: each stage's :class:`calib_core.stages.base.FrameStream`
    and the :class:`calib_core.frames.StreamedSource` of its output (which keeps
    the :func:`preview_index` frame).  The last source computes its chunks --
    the whole group -- in a background thread, one chunk ahead of its reader.  The last source is the input of the stage
    that stores frames; the streams' ``finish`` is due once that stage has read
    it and ``exhaust`` ran.
    """
    opened = []
    source = inp
    stages = list(stages)
    for k, (stage, cfg, ctx) in enumerate(stages):
        stream = stage.stream(source, cfg, ctx)
        source = StreamedSource(stream, source.iter_chunks(chunk_frames),
                                preview_index=preview_index(stream.axis.read_kind, stream.n_frames),
                                prefetch=k == len(stages) - 1)     # the whole streamed group, one chunk ahead
        opened.append((stream, source))
    return opened


def preview_index(read_kind: np.ndarray, n_frames: int) -> int:
    """The frame a stage's diagnostics show: the middle signal read (the middle frame without any)."""
    signal = np.flatnonzero(np.asarray(read_kind) == 1)
    return int(signal[len(signal) // 2]) if signal.size else n_frames // 2


def frame_image(output: StoredOutput, index: int, *, title: str, clabel: str = "electrons") -> dict:
    """``image`` plot data of one stored frame (never a cube).

    A streamed stage (its planes not stored, see :class:`calib_core.frames.StreamedSource`)
    keeps the one frame :func:`preview_index` picks as its ``preview`` field; that frame is shown.
    """
    if "data" not in output.fields and "preview" in output.fields:
        index = int(output.meta.get("preview_index", 0))
        return {"kind": "image", "title": f"{title} (frame {index}; streamed, frame planes not stored)",
                "data": np.array(output.fields["preview"][0]), "xlabel": "detector column",
                "ylabel": "detector row", "clabel": clabel}
    data = output.fields["data"]
    index = int(min(max(index, 0), data.shape[0] - 1))
    return {"kind": "image", "title": f"{title} (frame {index})", "data": np.array(data[index]),
            "xlabel": "detector column", "ylabel": "detector row", "clabel": clabel}
