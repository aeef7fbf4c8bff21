"""The stage protocol: what the chain runner needs from every stage.

A stage is a thin adapter (like a jwst ``Step`` around stcal functions):

* ``info``: its :class:`~calib_core.stages.info.StageInfo` (place in the chain, declared reads);
* ``Config``: the typed schema of its section ``calib.<name>`` (a
  :class:`calib_core.config.base.StageConfig` subclass);
* ``run(inp, cfg, ctx, writer) -> metrics``: streams its input, calls the pure
  array functions of the modules beside it, writes its output fields through
  ``writer`` (the runner commits them) and returns a JSON-serialisable dict of
  QC metrics;
* ``gates(metrics, cfg) -> list[Gate]``: the QC gates of that stage;
* ``diagnostics(output, metrics, ctx) -> list``: plot *data* for the app and
  the audit report (:mod:`calib_core.diagnostics`; no plotting library here).

Frame stages may also offer ``stream(inp, cfg, ctx) -> FrameStream``: the same
work applied chunk by chunk in memory, so that the runner can chain several
detector stages without storing the planes between them (see
:class:`FrameStream`).

Input kinds: ``"raw"`` (a :class:`RawInput` streaming uint16 frames from the
signal parquet), ``"frames"`` (a :class:`calib_core.frames.FrameSource`) or
``"series"`` (a :class:`calib_core.store.StoredOutput` of a series stage).
Stages with ``scope == "planet"`` run once per planet and get a dict
``{instrument: StoredOutput}``.

Whatever else a stage reads -- another stage's config section or output --
comes from its :class:`StageContext`, which hands out only what the stage's
``info`` declares, so the cache key (which hashes the declarations) covers it.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

import numpy as np

from .errors import QCError, StageError, UndeclaredRead
from .info import StageInfo
from .streaming import run_stream

if TYPE_CHECKING:  # pragma: no cover
    from ..frames import FrameAxisMeta, Frames
    from ..store import StoredOutput, StoreWriter

__all__ = ["FrameStream", "Gate", "QCError", "RawInput", "Stage", "StageContext", "StageError", "StreamStage",
           "UndeclaredRead", "gate"]


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


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def gate(name: str, value: float | int | None, op: str, limit: float, message: str = "") -> Gate:
    """Build a :class:`Gate` from ``value <op> limit`` (``op`` in ``<, <=, >, >=``).

    A ``None`` or NaN value fails (a metric that could not be computed is not a pass).
    """
    ok = value is not None and not (isinstance(value, float) and math.isnan(value)) and _OPS[op](value, limit)
    return Gate(name, value, f"{op} {limit:g}", bool(ok), message)


@dataclass
class RawInput:
    """Streaming access to one instrument's raw uint16 frames of a planet visit."""

    planet: Any          #: :class:`calib_core.io.planet.Planet`
    instrument: str

    @property
    def n_frames(self) -> int:
        return self.planet.n_frames(self.instrument)

    def iter_chunks(self, chunk_frames: int) -> Iterator[tuple[int, np.ndarray]]:
        yield from self.planet.iter_frames(self.instrument, chunk_frames=chunk_frames)


@dataclass
class StageContext:
    """Everything a stage may consult besides its input and its own config.

    A stage may ask it for exactly what its :class:`~calib_core.stages.info.StageInfo`
    declares (``reads_config``, ``reads_outputs``); asking for anything else
    raises :class:`UndeclaredRead`, so the cache key -- which hashes the
    declarations -- covers every read.
    """

    planet: Any                                   #: :class:`calib_core.io.planet.Planet`
    instrument: str | None                        #: None for planet-scope stages
    stage: str                                    #: the stage this context serves (its declarations apply)
    #: other stages' typed config sub-sections by dotted path (``"phase.ephemeris"``); absent: not in the profile
    configs: Mapping[str, Any] = field(default_factory=dict)
    #: committed upstream outputs by ``(stage, instrument)``
    outputs: Mapping[tuple[str, str | None], "StoredOutput"] = field(default_factory=dict)
    chunk_frames: int = 1024                      #: frames per streamed chunk (bounded memory)
    progress: Callable[[float, str], None] | None = None   #: callback(fraction 0..1, message)

    @classmethod
    def of(cls, stage: str, planet: Any, instrument: str | None, stage_configs: Mapping[str, Any] | None = None,
           **kwargs: Any) -> "StageContext":
        """The context of ``stage``, given the typed configs of the profile's stages by name.

        Only the sub-sections the stage declares reading are kept; ``kwargs``
        set the other fields (``outputs``, ``chunk_frames``, ``progress``).
        """
        from . import stage_info

        configs: dict[str, Any] = {}
        for path in stage_info(stage).reads_config:
            name, *keys = path.split(".")
            if stage_configs and name in stage_configs:
                node = stage_configs[name]
                for key in keys:
                    node = getattr(node, key)
                configs[path] = node
        return cls(planet=planet, instrument=instrument, stage=stage, configs=configs, **kwargs)

    @property
    def info(self) -> StageInfo:
        from . import stage_info

        return stage_info(self.stage)

    def report(self, fraction: float, message: str = "") -> None:
        if self.progress is not None:
            self.progress(float(min(max(fraction, 0.0), 1.0)), message)

    def config(self, path: str) -> Any:
        """The typed config section ``path`` of another stage (``"phase.ephemeris"``); None if not in the profile.

        Raises
        ------
        UndeclaredRead
            ``path`` is not in the stage's ``info.reads_config``.
        """
        if path not in self.info.reads_config:
            raise UndeclaredRead(f"stage '{self.stage}' reads calib.{path} without declaring it "
                                 "(StageInfo.reads_config)")
        return self.configs.get(path)

    def output_of(self, stage: str, instrument: str | None = None) -> "StoredOutput | None":
        """A committed upstream output (same instrument by default); None when the profile did not run it.

        Raises
        ------
        UndeclaredRead
            ``stage`` is not in the stage's ``info.reads_outputs``.
        """
        if stage not in self.info.reads_outputs:
            raise UndeclaredRead(f"stage '{self.stage}' reads the output of '{stage}' without declaring it "
                                 "(StageInfo.reads_outputs)")
        inst = self.instrument if instrument is None else instrument
        return self.outputs.get((stage, inst))


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
    """Base class of all stages; subclasses set ``info`` and ``Config`` and implement ``run``."""

    info: ClassVar[StageInfo]
    Config: ClassVar[type]
    #: reads its input only through ``iter_chunks`` / ``read`` / ``take`` in frame order, so a
    #: :class:`calib_core.frames.StreamedSource` can stand in for a stored input
    accepts_stream: ClassVar[bool] = False

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def title(self) -> str:
        return self.info.title

    @property
    def scope(self) -> str:
        return self.info.scope

    @property
    def input_kind(self) -> str:
        return self.info.input_kind

    @property
    def output_kind(self) -> str:
        return self.info.output_kind

    @property
    def default_io(self) -> tuple[str, str]:
        return self.info.default_io

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

    def diagnostics(self, output: "StoredOutput", metrics: dict, ctx: StageContext) -> list:
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
