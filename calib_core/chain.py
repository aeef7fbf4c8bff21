"""The chain runner: ordering, I/O-key chaining, caching, QC gates and provenance.

It holds no numerics: each stage's ``run`` does the work (see
:mod:`calib_core.stages.base`).  For one planet visit it

1. validates the profile (nothing is read before the config is known good),
2. runs the enabled instrument stages for each instrument, then the planet
   stages (depths, sigma calibration) once,
3. reuses a stage's stored output when its cache key matches: the key hashes
   the input checksums, every upstream stage's config section and code, and
   the stage's own section and code -- a changed upstream key invalidates, an
   unchanged one hits,
4. evaluates QC gates (``warn`` records and continues, ``error`` stops the run
   without committing the failing stage's output); consecutive detector
   stages whose ``cache.write_intermediate`` is false are streamed in memory
   into the next stage that stores frames and cached with it as one unit
   (:meth:`_Runner.run_streamed`),
5. writes ``config.yaml``, ``qc.json``, ``run_hash_summary.json``, the
   per-stage outputs under ``calib/<stage>/<instrument>/`` and ``depths.csv``,
   all atomically, and appends a one-line summary to ``debug_log.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
from omegaconf import DictConfig, OmegaConf

from . import rundir
from .blas import single_threaded_blas
from .config.compose import ValidatedConfig, config_hash, config_to_yaml, typed_content, validate_config
from .frames import StreamedSource
from .io.validate import validate_planet
from .memory import tune_allocators
from .config.base import ConfigError
from .paths import config_files
from .plan import stage_inputs
from .provenance import PLANET_SCOPE_DIR, code_hash, input_checksums, write_run_files
from .stages import get_stage, stage_info
from .stages.base import Gate, QCError, RawInput, StageContext, StageError
from .stages.streaming import preview_index, stream_chain
from .store import StoredOutput, StoreWriter, atomic_write_text, load_output, release_frames, verify_output

__all__ = ["PLANET_SCOPE_DIR", "RunResult", "StageRecord", "resolve_planet", "run_chain"]

log = logging.getLogger(__name__)
ProgressFn = Callable[[str, str | None, float, str], None]


@dataclass
class StageRecord:
    """What happened to one stage for one instrument (or the planet)."""

    stage: str
    instrument: str | None
    status: str                    #: "ran" | "cached" | "skipped" | "failed"; "recomputed" reasons say why
    cache_key: str = ""
    seconds: float = 0.0
    metrics: dict = field(default_factory=dict)
    gates: list[Gate] = field(default_factory=list)
    output_dir: str | None = None
    reason: str = ""

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_json(self) -> dict:
        """The record as JSON-ready data; the metrics are shared, not copied (they can be large)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["gates"] = [g.to_json() for g in self.gates]
        return d


@dataclass
class RunResult:
    """Outcome of :func:`run_chain`."""

    run_dir: Path
    status: str                                   #: "ok" | "failed" | "interrupted" ("running" while it runs)
    config_hash: str
    records: list[StageRecord]
    message: str = ""
    planet: Any = None                            #: the :class:`calib_core.io.planet.Planet` that was run
    validated: ValidatedConfig | None = None

    def record(self, stage: str, instrument: str | None = None) -> StageRecord | None:
        for r in self.records:
            if r.stage == stage and r.instrument == instrument:
                return r
        return None

    def output(self, stage: str, instrument: str | None = None) -> StoredOutput | None:
        rec = self.record(stage, instrument)
        return load_output(rec.output_dir) if rec and rec.output_dir else None

    def diagnostics(self, stage: str, instrument: str | None = None) -> list:
        """Plot data of one stage output (:mod:`calib_core.diagnostics`; see :meth:`~calib_core.stages.base.Stage.diagnostics`)."""
        rec = self.record(stage, instrument)
        out = self.output(stage, instrument)
        if rec is None or out is None:
            return []
        upstream = _StoredOutputs({(r.stage, r.instrument): r.output_dir for r in self.records if r.output_dir})
        ctx = StageContext.of(stage, self.planet, instrument, self.validated.stages if self.validated else None,
                              outputs=upstream)
        return get_stage(stage).diagnostics(out, rec.metrics, ctx)


class _StoredOutputs(Mapping):
    """``{(stage, instrument): StoredOutput}`` of a run, each loaded when a stage first asks for it.

    Diagnostics consult one or two upstream outputs; loading all of them (every
    ``meta.json``) would cost more than the diagnostics themselves.
    """

    def __init__(self, dirs: dict[tuple[str, str | None], str]):
        self._dirs = dirs
        self._loaded: dict[tuple[str, str | None], StoredOutput | None] = {}

    def __getitem__(self, key: tuple[str, str | None]) -> StoredOutput:
        if key not in self._loaded:
            self._loaded[key] = load_output(self._dirs[key])
        out = self._loaded[key]
        if out is None:
            raise KeyError(key)
        return out

    def __iter__(self) -> Iterator[tuple[str, str | None]]:
        return (key for key in self._dirs if key in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def resolve_planet(vc: ValidatedConfig):
    """Open the planet the config points at (generating the demo planet when ``data.root`` is null)."""
    from .io import open_planet
    from .sim import ensure_demo

    data = vc.data
    if data.root is None:
        root = ensure_demo(seed=data.demo_seed)
        return open_planet(root, planet_id=data.planet_id, split=data.split, visit=data.visit)
    return open_planet(Path(str(data.root)).expanduser(), planet_id=data.planet_id, split=data.split,
                       visit=data.visit)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------


class _Runner:
    def __init__(self, vc: ValidatedConfig, run_dir: Path, progress: ProgressFn | None,
                 force_error_gates: bool):
        self.vc = vc
        self.run_dir = run_dir
        self.progress = progress
        self.force_error_gates = force_error_gates
        self.records: list[StageRecord] = []
        self.outputs: dict[tuple[str, str | None], StoredOutput] = {}
        self.keys: dict[tuple[str, str | None], str] = {}
        self.not_reused: dict[tuple[str, str | None], str] = {}      #: stored outputs not reused, and why
        self.scratch = run_dir / ".scratch"
        #: ``(stage, instrument) -> (next stage, its key)``: who reads a stage's frame planes
        self.consumer: dict[tuple[str, str | None], tuple[str, str]] = {}
        self.forced: set[str] = set()

    def _report(self, stage: str, inst: str | None, frac: float, msg: str = "") -> None:
        if self.progress is not None:
            self.progress(stage, inst, frac, msg)

    def _out_dir(self, name: str, inst: str | None, cfg: Any) -> Path:
        base = self.run_dir / "calib" if cfg.cache.write_intermediate else self.scratch
        return base / name / (inst or PLANET_SCOPE_DIR)

    def _cached(self, name: str, inst: str | None, key: str, force: bool) -> StoredOutput | None:
        """The stored output of ``name`` when caching is on, not forced, its key matches and its files check out.

        Every file is checked against the output's ``checksums.json`` first: an
        output edited, truncated or corrupted on disk is recomputed (and the
        run log says which file), never used.
        """
        cfg = self.vc.stages[name]
        if not cfg.cache.enabled or force:
            return None
        out_dir = self._out_dir(name, inst, cfg)
        out = load_output(out_dir)
        if out is None or out.meta.get("cache_key") != key:
            return None
        if out.meta.get("planes_released") and not self._consumer_hits(name, inst):
            reader = self.consumer.get((name, inst), ("its reader",))[0]
            log.info("%s/%s: frame planes were released after use and %s must run again: recomputing",
                     name, inst or PLANET_SCOPE_DIR, reader)
            self.not_reused[(name, inst)] = (f"its frame planes were released after use "
                                             f"(cache.write_intermediate: false) and {reader} runs again")
            return None
        problem = verify_output(out_dir)
        if problem is not None:
            log.warning("%s/%s: stored output not reused, recomputing: %s", name, inst or PLANET_SCOPE_DIR, problem)
            self.not_reused[(name, inst)] = problem
            return None
        return out

    def _consumer_hits(self, name: str, inst: str | None) -> bool:
        """Whether the stage reading ``name``'s frame planes will reuse its stored output (so needs no planes)."""
        succ = self.consumer.get((name, inst))
        return succ is not None and self._cached(succ[0], inst, succ[1], succ[0] in self.forced) is not None

    def _release_planes(self, name: str, inst: str) -> None:
        """Drop the frame planes of ``name`` once the stage reading them committed (``write_intermediate: false``).

        Only a frame stage that was neither streamed nor the last one keeps its
        planes until then (in ``run_dir/.scratch``); one preview frame stays for
        its diagnostics (:func:`calib_core.store.release_frames`).
        """
        out = self.outputs.get((name, inst))
        if out is None or self.vc.stages[name].cache.write_intermediate or "data" not in out.fields:
            return
        kinds = np.asarray(out.fields["frame_read_kind"]) if "frame_read_kind" in out.fields else np.zeros(0)
        released = release_frames(out.path, preview_index(kinds, out.fields["data"].shape[0]))
        if released is not None:
            self.outputs[(name, inst)] = released
            log.info("%s/%s: frame planes released after use (write_intermediate: false)", name, inst)

    def _use_cached(self, name: str, inst: str | None, key: str, cached: StoredOutput) -> StoredOutput:
        rec = StageRecord(name, inst, "cached", key, output_dir=str(cached.path))
        rec.metrics = cached.meta.get("metrics", {})
        # thresholds are not part of the key: judge the stored metrics with today's gates
        rec.gates = self._gates(get_stage(name), self.vc.stages[name], rec.metrics)
        self._stop_on_error_gate(rec)          # a stored output that fails an error gate is not used
        self.records.append(rec)
        self.outputs[(name, inst)] = cached
        self._report(name, inst, 1.0, "cached")
        return cached

    def _ctx(self, name: str, inst: str | None, planet) -> StageContext:
        """What stage ``name`` may read besides its input: exactly its declared config sections and outputs."""
        return StageContext.of(name, planet, inst, self.vc.stages, outputs=self.outputs,
                               chunk_frames=self.vc.runtime.chunk_frames,
                               progress=lambda f, m="": self._report(name, inst, f, m))

    def run_stage(self, name: str, inst: str | None, inp: Any, key: str, planet, force: bool) -> StoredOutput:
        cached = self._cached(name, inst, key, force)
        if cached is not None:
            return self._use_cached(name, inst, key, cached)
        if isinstance(inp, StoredOutput) and inp.meta.get("planes_released"):   # cannot happen: the upstream
            raise StageError(name, inst, f"its input {inp.path} no longer has frame planes "   # is recomputed then
                             "(released after use); run again with runtime.from_stage set to the stage before")
        with _named(name, inst), _stage_logging(name, self.vc.stages[name]):
            return self._run_and_commit(name, inst, inp, key, planet, [])

    def run_streamed(self, group: list[tuple[str, str]], name: str, inst: str, inp: Any, key: str, planet,
                     forced: set[str]) -> StoredOutput:
        """Run the stages of ``group`` as streams feeding stage ``name``, whose output alone stores frames.

        ``group`` lists ``(stage, cache key)`` of consecutive frame stages with
        ``cache.write_intermediate: false``.  They are cached as one unit with
        ``name``: all hit, or all run again.
        """
        members = [*group, (name, key)]
        force = any(n in forced for n, _ in members)
        hits = [self._cached(n, inst, k, force) for n, k in members]
        if all(h is not None for h in hits):
            for (n, k), hit in zip(members, hits):
                self._use_cached(n, inst, k, hit)
            return hits[-1]
        opened = stream_chain([(get_stage(n), self.vc.stages[n], self._ctx(n, inst, planet)) for n, _ in group],
                              self._as_input(group[0][0], inp), self.vc.runtime.chunk_frames)
        for stage_name, _ in group:
            self._report(stage_name, inst, 0.0, f"streaming into {name}")
        streamed = [(n, k, stream, source) for (n, k), (stream, source) in zip(group, opened)]
        with _named(name, inst), _stage_logging(name, self.vc.stages[name]):
            return self._run_and_commit(name, inst, opened[-1][1], key, planet, streamed)

    def _run_and_commit(self, name: str, inst: str | None, inp: Any, key: str, planet,
                        streamed: list[tuple[str, str, Any, StreamedSource]]) -> StoredOutput:
        """Run one stage (and finish the streams feeding it); judge every gate; commit only if none stops the run."""
        stage = get_stage(name)
        cfg = self.vc.stages[name]
        out_dir = self._out_dir(name, inst, cfg)
        rec = StageRecord(name, inst, "ran", key, output_dir=str(out_dir),
                          reason=f"recomputed: {self.not_reused[(name, inst)]}" if (name, inst) in self.not_reused
                          else "")
        t0 = time.perf_counter()
        self._report(name, inst, 0.0, "running")
        with contextlib.ExitStack() as stack:
            writer = stack.enter_context(StoreWriter(out_dir))
            metrics = stage.run(inp, cfg, self._ctx(name, inst, planet), writer)
            if isinstance(inp, StreamedSource):
                inp.exhaust()              # every streamed stage has seen every frame before it reports
            rec.seconds = round(time.perf_counter() - t0, 3)
            done: list[tuple[StageRecord, StoreWriter, dict]] = []
            for stage_name, stage_key, stream, source in streamed:
                stage_cfg = self.vc.stages[stage_name]
                stage_dir = self._out_dir(stage_name, inst, stage_cfg)
                srec = StageRecord(stage_name, inst, "ran", stage_key, output_dir=str(stage_dir),
                                   reason=f"streamed into '{name}': frame planes not stored, time counted there")
                swriter = stack.enter_context(StoreWriter(stage_dir))
                srec.metrics = stream.finish(swriter)
                if source.preview is not None:
                    swriter.put("preview", source.preview, "electron")
                srec.gates = self._gates(get_stage(stage_name), stage_cfg, srec.metrics)
                self._stop_on_error_gate(srec)        # nothing of the group is committed
                done.append((srec, swriter, {"streamed_into": name, "preview_index": source.preview_index}))
            rec.metrics = metrics
            rec.gates = self._gates(stage, cfg, metrics)
            self._stop_on_error_gate(rec)
            for srec, swriter, extra in done:
                self.outputs[(srec.stage, inst)] = swriter.commit(self._meta(srec, self.vc.stages[srec.stage], extra))
                self.records.append(srec)
                self._report(srec.stage, inst, 1.0, f"streamed into {name}")
            output = writer.commit(self._meta(rec, cfg, {}))
        self.records.append(rec)
        _log_metrics(name, inst, cfg, rec)
        self._report(name, inst, 1.0, f"done in {rec.seconds:.2f} s")
        return output

    @staticmethod
    def _meta(rec: StageRecord, cfg: Any, extra: dict) -> dict:
        return {
            "stage": rec.stage, "instrument": rec.instrument, "cache_key": rec.cache_key, "seconds": rec.seconds,
            "config": asdict(cfg),      # a validated dataclass: plain values (OmegaConf: 25 ms each)
            "metrics": rec.metrics, "gates": [g.to_json() for g in rec.gates], **extra,
        }

    def _stop_on_error_gate(self, rec: StageRecord) -> None:
        """Record a stage whose ``error`` gate failed as failed (nothing committed) and raise."""
        if any(not g.passed and g.action == "error" for g in rec.gates):
            rec.status, rec.output_dir = "failed", None
            self.records.append(rec)
            self._raise_on_error_gate(rec)      # open writers discard their temporary output on exit

    @staticmethod
    def _raise_on_error_gate(rec: StageRecord) -> None:
        failed = [g for g in rec.gates if not g.passed and g.action == "error"]
        if failed:
            g = failed[0]
            where = f" ({rec.instrument})" if rec.instrument else ""
            raise QCError(f"QC gate '{g.name}' of stage '{rec.stage}'{where} failed: value {g.value} not "
                          f"{g.threshold}{' - ' + g.message if g.message else ''}")

    def _gates(self, stage, cfg, metrics: dict) -> list[Gate]:
        qc = cfg.quality_checks
        if not qc.enabled:
            return []
        gates = list(stage.gates(metrics, cfg))
        if "n_nonfinite" in metrics:
            n = int(metrics["n_nonfinite"])
            gates.append(Gate("finite", n, "== 0", n == 0, "NaN/Inf values on usable pixels"))
        action = "error" if self.force_error_gates else qc.action_on_fail
        for g in gates:
            g.action = action
        return gates

    def run(self, planet, checksums: dict[str, str]) -> None:
        vc = self.vc
        enabled = vc.enabled
        inst_stages = [n for n in enabled if get_stage(n).scope == "instrument"]
        planet_stages = [n for n in enabled if get_stage(n).scope == "planet"]
        force_from = vc.runtime.from_stage
        forced = set(enabled[enabled.index(force_from):]) if force_from in enabled else set()
        self.forced = forced
        data_key = _key(typed_content(vc.cfg)["data"], checksums)
        last: dict[str, tuple[str, StoredOutput | RawInput]] = {}
        for inst in vc.data.instruments:
            key = _key(data_key, inst)
            keys = []
            for name in inst_stages:
                key = self._chain_key(key, name, inst)
                keys.append(key)
            for a, b, kb in zip(inst_stages, inst_stages[1:], keys[1:]):
                self.consumer[(a, inst)] = (b, kb)
            inp: Any = RawInput(planet, inst)
            group: list[tuple[str, str]] = []      # streamed stages waiting for the stage that stores frames
            prev: str | None = None
            for i, (name, key) in enumerate(zip(inst_stages, keys)):
                if self._streams_into(name, inst_stages[i + 1] if i + 1 < len(inst_stages) else None):
                    group.append((name, key))
                    continue
                if group:
                    out = self.run_streamed(group, name, inst, inp, key, planet, forced)
                    group = []
                else:
                    out = self.run_stage(name, inst, self._as_input(name, inp), key, planet, name in forced)
                self.outputs[(name, inst)] = out
                if prev is not None:
                    self._release_planes(prev, inst)
                prev, inp = name, out
            last[inst] = (key, inp)
        if not planet_stages:
            return
        missing = [i for i in ("FGS1", "AIRS-CH0") if i not in vc.data.instruments]
        if missing:
            for name in planet_stages:
                self.records.append(StageRecord(name, None, "skipped",
                                                reason=f"needs both instruments; data.instruments lacks {missing}"))
            return
        if not inst_stages or get_stage(inst_stages[-1]).output_kind != "series":
            for name in planet_stages:
                self.records.append(StageRecord(name, None, "skipped", reason="no light curves upstream"))
            return
        key = _key(*(last[i][0] for i in vc.data.instruments))
        inp = {i: last[i][1] for i in vc.data.instruments}
        for name in planet_stages:
            key = self._chain_key(key, name, None)
            out = self.run_stage(name, None, inp, key, planet, name in forced)
            self.outputs[(name, None)] = out
            inp = out

    def _streams_into(self, name: str, successor: str | None) -> bool:
        """Stream ``name`` into its successor: its planes are not kept, it can stream, the successor takes a stream."""
        cfg = self.vc.stages[name]
        return (successor is not None and not cfg.cache.write_intermediate and get_stage(name).can_stream(cfg)
                and get_stage(successor).accepts_stream)

    def _chain_key(self, upstream: str, name: str, inst: str | None) -> str:
        """Cache key of ``name``: its upstream key, what it reads (:func:`calib_core.plan.stage_inputs`), its code.

        The keys of the outputs it declares reading are part of it too (for a
        planet stage, those of every instrument).
        """
        insts = [inst] if inst is not None else list(self.vc.data.instruments)
        reads = {f"{s}/{i}": self.keys.get((s, i)) for s in stage_info(name).reads_outputs for i in insts}
        key = _key(upstream, name, stage_inputs(self.vc.cfg, name, self.run_dir), reads, code_hash(get_stage(name)))
        self.keys[(name, inst)] = key
        return key

    @staticmethod
    def _as_input(name: str, inp: Any) -> Any:
        """Frame stages read a stored output through a chunked :class:`FrameSource`."""
        if isinstance(inp, StoredOutput) and get_stage(name).input_kind == "frames":
            # released planes (write_intermediate: false) were reused only because this stage hits its cache
            return inp.frames() if "data" in inp.fields else inp
        return inp


@contextlib.contextmanager
def _named(stage: str, inst: str | None) -> Iterator[None]:
    """Failures inside a stage surface as one-line :class:`StageError` ``<stage>/<instrument>: <cause>``."""
    try:
        yield
    except (QCError, KeyboardInterrupt):
        raise
    except StageError as exc:          # from a stream feeding this stage: it names its own stage
        raise exc if exc.instrument else StageError(exc.stage, inst, exc.cause) from exc
    except Exception as exc:
        log.debug("%s/%s failed", stage, inst or PLANET_SCOPE_DIR, exc_info=True)
        raise StageError.wrap(stage, inst, exc) from exc


@contextlib.contextmanager
def _stage_logging(name: str, cfg: Any) -> Iterator[None]:
    """The stage's ``logging.level`` applies to its package's loggers while it runs."""
    logger = logging.getLogger(f"calib_core.stages.{name}")
    before = logger.level
    logger.setLevel(cfg.logging.level)
    try:
        yield
    finally:
        logger.setLevel(before)


def _log_metrics(name: str, inst: str | None, cfg: Any, rec: "StageRecord") -> None:
    """With ``logging.log_sample_stats``, the stage's scalar metrics go to its log at INFO (one line)."""
    if not cfg.logging.log_sample_stats:
        return
    scalars = [(k, v) for k, v in rec.metrics.items()
               if isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) < 40)]
    text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in scalars)
    logging.getLogger(f"calib_core.stages.{name}").info("%s/%s in %.2f s: %s", name, inst or PLANET_SCOPE_DIR,
                                                        rec.seconds, text)


@contextlib.contextmanager
def _run_log(run_dir: Path) -> Iterator[None]:
    """Everything the engine logs during the run also goes to ``run_dir/run.log``."""
    handler = logging.FileHandler(run_dir / "run.log", mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    engine = logging.getLogger("calib_core")
    if engine.level == logging.NOTSET or engine.level > logging.INFO:
        engine.setLevel(logging.INFO)
    engine.addHandler(handler)
    try:
        yield
    finally:
        engine.removeHandler(handler)
        handler.close()


def _confine_files(vc: ValidatedConfig, run_dir: Path) -> None:
    """Confine every file the profile names (:func:`calib_core.paths.config_files`) before anything is read.

    The stages get the resolved paths, so a symlink swapped after this check cannot lead them elsewhere
    than the file whose content the cache key hashed.
    """
    for key, path in config_files(vc.cfg, run_dir).items():
        _, stage, *sub = key.split(".")
        node = vc.stages[stage]
        for name in sub[:-1]:
            node = getattr(node, name)
        if vc.stages[stage].validation.require_existing_paths and not path.is_file():
            raise ConfigError(key, OmegaConf.select(vc.cfg, key), "no such file")
        setattr(node, sub[-1], str(path))


def run_chain(cfg: DictConfig, *, run_dir: str | Path | None = None, progress: ProgressFn | None = None,
              force_error_gates: bool = False, raise_on_failure: bool = True) -> RunResult:
    """Run the profile's enabled stages on the configured planet and write the run directory.

    Parameters
    ----------
    cfg
        An effective config from :func:`calib_core.config.compose_config`.
    run_dir
        Overrides ``cfg.run_dir``.
    progress
        ``callback(stage, instrument, fraction, message)`` for progress displays.
    force_error_gates
        Treat every QC gate as ``action_on_fail: error`` (the strict audit).
    raise_on_failure
        Re-raise a failure (default); with False the failed :class:`RunResult`
        is returned instead (its ``status`` is "failed", ``message`` says why).

    Raises
    ------
    calib_core.config.ConfigError, calib_core.io.DataLayoutError, StageError, QCError
        Invalid config, unreadable data, a stage that could not complete (one
        line, ``<stage>/<instrument>: <cause>``), or an ``error`` gate failed.
    calib_core.rundir.RunDirBusy
        Another process is writing ``run_dir``.
    KeyboardInterrupt
        Ctrl-C or SIGTERM: the run is recorded as ``interrupted`` first.

    Notes
    -----
    The run directory holds one run (:mod:`calib_core.rundir`): the previous
    run's final products are removed before anything runs, and every way the
    run can end -- ok, failed, interrupted -- is recorded in ``run_state.json``,
    ``qc.json``, ``run_hash_summary.json`` and ``debug_log.md``; ``depths.csv``
    exists only after an ``ok`` run.  Completed stages stay committed (the
    cache), the failing one leaves nothing.
    """
    t_start = time.perf_counter()
    tune_allocators()
    vc = validate_config(cfg)
    run_dir = Path(run_dir if run_dir is not None else cfg.run_dir).expanduser().resolve()
    chash = config_hash(cfg)
    with rundir.claim(run_dir, chash), _run_log(run_dir), single_threaded_blas():
        atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
        result = RunResult(run_dir, "running", chash, [], validated=vc)
        checksums = None
        try:
            _confine_files(vc, run_dir)
            result.planet = resolve_planet(vc)
            # every input of every instrument is checked before anything is computed
            validate_planet(result.planet, list(vc.data.instruments))
            checksums = input_checksums(result.planet, list(vc.data.instruments))
            runner = _Runner(vc, run_dir, progress, force_error_gates)
            result.records = runner.records
            runner.run(result.planet, checksums)
            result.status = "ok"
        except KeyboardInterrupt as exc:
            result.status, result.message = "interrupted", str(exc) or "interrupted (Ctrl-C)"
            log.warning("run interrupted: %s", result.message)
            raise
        except Exception as exc:
            result.status = "failed"
            result.message = str(exc).splitlines()[0] if isinstance(exc, (QCError, StageError)) or \
                type(exc).__name__ in ("ConfigError", "DataLayoutError", "RunDirBusy") \
                else f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.error("run failed: %s", result.message)
            if raise_on_failure:
                raise
        finally:
            write_run_files(result, vc, checksums, time.perf_counter() - t_start)
            log.info("run %s in %.1f s: %s", result.status, time.perf_counter() - t_start, run_dir)
    return result
