"""Running frame stages as streams: a stage's stream written to planes, or several streams chained in memory."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..frames import StreamedSource
from ..store import StoreWriter, release_pages
from .errors import StageError

__all__ = ["preview_index", "run_stream", "stream_chain"]


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
    buffers = None
    for k, (stage, cfg, ctx) in enumerate(stages):
        stream = _Named(stage.stream(source, cfg, ctx), stage.name, ctx.instrument)
        if k == 0:
            buffers = getattr(stream, "buffers", None)     # the ADC's chunk planes: the rest work in place
        last = k == len(stages) - 1
        source = StreamedSource(stream, source.iter_chunks(chunk_frames),
                                preview_index=preview_index(stream.axis.read_kind, stream.n_frames),
                                prefetch=last,      # the whole streamed group, one chunk ahead
                                buffers=buffers if last else None)
        opened.append((stream, source))
    return opened


def preview_index(read_kind: np.ndarray, n_frames: int) -> int:
    """The frame a stage's diagnostics show: the middle signal read (the middle frame without any)."""
    signal = np.flatnonzero(np.asarray(read_kind) == 1)
    return int(signal[len(signal) // 2]) if signal.size else n_frames // 2


class _Named:
    """A stage's stream whose failures name the stage (they surface in the stage it streams into)."""

    def __init__(self, stream: Any, stage: str, instrument: str | None):
        self._stream, self._stage, self._instrument = stream, stage, instrument

    def process(self, chunk: Any) -> Any:
        try:
            return self._stream.process(chunk)
        except Exception as exc:
            raise StageError.wrap(self._stage, self._instrument, exc) from exc

    def finish(self, writer: StoreWriter) -> dict:
        return self._stream.finish(writer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
