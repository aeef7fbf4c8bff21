"""The stage protocol: what the chain runner needs from every stage.

A stage is a thin adapter (like a jwst ``Step`` around an stcal function):

* ``Config``: the typed schema of its section ``calib.<name>`` (a
  :class:`calib_core.config.base.StageConfig` subclass);
* ``run(inp, cfg, ctx, writer) -> metrics``: streams its input, calls pure
  array kernels (module-level functions, unit-tested against oracles), writes
  its output fields through ``writer`` (the runner commits them) and returns a
  JSON-serialisable dict of QC metrics;
* ``gates(metrics, cfg) -> list[Gate]``: the QC gates of that stage;
* ``diagnostics(output, metrics, ctx) -> list[dict]``: plot *data* for the app
  and the audit report (no plotting library here: plain arrays + titles).

Frame stages may also offer ``stream(inp, cfg, ctx) -> FrameStream``: the same
work applied chunk by chunk in memory, so that the runner can chain several
detector stages without storing the planes between them (see
:class:`FrameStream`).

Input kinds: ``"raw"`` (a :class:`RawInput` streaming uint16 frames from the
signal parquet), ``"frames"`` (a :class:`calib_core.frames.FrameSource`) or
``"series"`` (a :class:`calib_core.frames.StoredOutput` of a series stage).
Stages with ``scope == "planet"`` run once per planet and get a dict
``{instrument: StoredOutput}``.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

import numpy as np

from .common import run_stream

if TYPE_CHECKING:  # pragma: no cover
    from ..frames import FrameAxisMeta, Frames, StoredOutput, StoreWriter

__all__ = ["FrameStream", "Gate", "Stage", "StreamStage", "StageContext", "RawInput", "gate", "hist_data", "QCError"]


class QCError(RuntimeError):
    """A QC gate with ``action_on_fail: error`` failed; the message names stage, gate and value."""


@dataclass
class Gate:
    """One QC gate outcome."""

    name: str
    value: float | int | None
    threshold: str
    passed: bool
    message: str = ""
    action: str = "warn"

    def to_json(self) -> dict:
        return asdict(self)


def gate(name: str, value: float | int | None, op: str, limit: float, message: str = "") -> Gate:
    """Build a :class:`Gate` from ``value <op> limit`` (``op`` in ``<, <=, >, >=``).

    A ``None`` or NaN value fails (a metric that could not be computed is not a pass).
    """
    ops: dict[str, Callable[[float, float], bool]] = {
        "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    }
    ok = value is not None and not (isinstance(value, float) and np.isnan(value)) and ops[op](value, limit)
    return Gate(name, value, f"{op} {limit:g}", bool(ok), message)


def hist_data(values: np.ndarray, bins: int = 128, range_: tuple[float, float] | None = None,
              title: str = "", xlabel: str = "", log: bool = True) -> dict:
    """Histogram plot data (counts, edges) computed here so the app holds no numerics."""
    values = np.asarray(values)
    values = values[np.isfinite(values)]
    if range_ is None:
        range_ = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        if range_[0] == range_[1]:
            range_ = (range_[0] - 0.5, range_[1] + 0.5)
    counts, edges = np.histogram(values, bins=bins, range=range_)
    return {"kind": "histogram", "title": title, "xlabel": xlabel, "counts": counts, "edges": edges, "logy": log}


@dataclass
class RawInput:
    """Streaming access to one instrument's raw uint16 frames of a planet visit."""

    planet: Any          #: :class:`calib_core.io.kaggle.Planet`
    instrument: str

    @property
    def n_frames(self) -> int:
        return self.planet.n_frames(self.instrument)

    def iter_chunks(self, chunk_frames: int) -> Iterator[tuple[int, np.ndarray]]:
        yield from self.planet.iter_frames(self.instrument, chunk_frames=chunk_frames)


@dataclass
class StageContext:
    """Everything a stage may consult besides its input and its own config."""

    planet: Any                                   #: :class:`calib_core.io.kaggle.Planet`
    instrument: str | None                        #: None for planet-scope stages
    stage_cfgs: dict[str, Any]                    #: typed configs of all stages in the profile, by name
    chunk_frames: int = 1024                      #: frames per streamed chunk (bounded memory)
    upstream: dict[tuple[str, str | None], "StoredOutput"] = field(default_factory=dict)
    progress: Callable[[float, str], None] | None = None   #: callback(fraction 0..1, message)

    def report(self, fraction: float, message: str = "") -> None:
        if self.progress is not None:
            self.progress(float(min(max(fraction, 0.0), 1.0)), message)

    def output_of(self, stage: str, instrument: str | None = None) -> "StoredOutput | None":
        """A committed upstream output (same instrument by default)."""
        inst = self.instrument if instrument is None else instrument
        return self.upstream.get((stage, inst))


class FrameStream(abc.ABC):
    """One frame stage opened on an input, applied chunk by chunk in memory.

    ``process`` takes the next input chunk (in frame order: a
    :class:`calib_core.frames.Frames`, or ``(first, raw uint16 array)`` for a
    raw-input stage) and returns the calibrated chunk; ``finish`` puts the
    stage's small fields and frame metadata into ``writer`` (everything but the
    frame planes) and returns the QC metrics.  A stage's ``run`` is this stream
    with every output chunk written to its planes, so a streamed stage and a
    stored one compute the same numbers.

    Attributes describe the output before any chunk was processed:
    ``n_frames``, ``frame_shape``, ``axis`` (:class:`calib_core.frames.FrameAxisMeta`),
    ``read_var`` (read-noise variance of one output frame, e-^2) and
    ``wavelength_um`` (AIRS-CH0 pixel-column wavelengths, or None).
    """

    n_frames: int
    frame_shape: tuple[int, int]
    axis: "FrameAxisMeta"
    read_var: np.ndarray
    wavelength_um: Any = None

    @abc.abstractmethod
    def process(self, chunk: Any) -> "Frames":
        """Calibrate the next chunk of frames."""

    @abc.abstractmethod
    def finish(self, writer: "StoreWriter") -> dict:
        """Write the small output fields and frame meta; return the QC metrics."""


class Stage(abc.ABC):
    """Base class of all stages; subclasses set the class attributes and implement ``run``."""

    name: ClassVar[str]
    title: ClassVar[str]
    Config: ClassVar[type]
    input_kind: ClassVar[str] = "frames"      # "raw" | "frames" | "series"
    output_kind: ClassVar[str] = "frames"     # "frames" | "series"
    scope: ClassVar[str] = "instrument"       # "instrument" | "planet"
    default_io: ClassVar[tuple[str, str]] = ("", "")
    #: reads its input only through ``iter_chunks`` / ``read`` / ``take`` in frame order, so a
    #: :class:`calib_core.frames.StreamedSource` can stand in for a stored input
    accepts_stream: ClassVar[bool] = False

    @abc.abstractmethod
    def run(self, inp: Any, cfg: Any, ctx: StageContext, writer: "StoreWriter") -> dict:
        """Process ``inp``, write output fields through ``writer``, return QC metrics."""

    def can_stream(self, cfg: Any) -> bool:
        """Whether :meth:`stream` works with this config."""
        return False

    def stream(self, inp: Any, cfg: Any, ctx: StageContext) -> FrameStream | None:
        """This stage as a :class:`FrameStream` on ``inp``, or None when it (or this config) cannot stream."""
        return None

    def gates(self, metrics: dict, cfg: Any) -> list[Gate]:
        return []

    def diagnostics(self, output: "StoredOutput", metrics: dict, ctx: StageContext) -> list[dict]:
        return []


class StreamStage(Stage):
    """A frame stage whose work is a :class:`FrameStream` with every config: ``run`` writes the stream to planes.

    Subclasses implement ``stream``; it also lets the runner stream the stage
    into the next one, and lets a stream stand in for its stored input.
    """

    accepts_stream = True

    def can_stream(self, cfg: Any) -> bool:
        return True

    @abc.abstractmethod
    def stream(self, inp: Any, cfg: Any, ctx: StageContext) -> FrameStream:
        """This stage opened on ``inp``."""

    def run(self, inp: Any, cfg: Any, ctx: StageContext, writer: "StoreWriter") -> dict:
        return run_stream(self.stream(inp, cfg, ctx), inp.iter_chunks(ctx.chunk_frames), writer, ctx,
                          release=(inp.data, inp.var, inp.dq))
