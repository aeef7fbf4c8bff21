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
import functools
import hashlib
import inspect
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
from omegaconf import DictConfig, OmegaConf

from .config.compose import ValidatedConfig, config_hash, config_to_yaml, validate_config
from .frames import (StoredOutput, StoreWriter, StreamedSource, atomic_write_json, atomic_write_text,
                     load_output)
from .io.kaggle import CALIBRATION_NAMES, DataLayoutError
from .io.validate import validate_planet
from .stages import QCError, get_stage
from .stages.base import Gate, RawInput, StageContext
from .stages.common import stream_chain

__all__ = ["RunResult", "StageRecord", "run_chain", "resolve_planet", "PLANET_SCOPE_DIR", "write_depths_csv"]

PLANET_SCOPE_DIR = "planet"   #: directory name used in place of an instrument for planet-scope stages
ProgressFn = Callable[[str, str | None, float, str], None]


@dataclass
class StageRecord:
    """What happened to one stage for one instrument (or the planet)."""

    stage: str
    instrument: str | None
    status: str                    #: "ran" | "cached" | "skipped" | "failed"
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
    status: str                                   #: "ok" | "failed"
    config_hash: str
    records: list[StageRecord]
    message: str = ""
    planet: Any = None                            #: the :class:`calib_core.io.kaggle.Planet` that was run
    validated: ValidatedConfig | None = None

    def record(self, stage: str, instrument: str | None = None) -> StageRecord | None:
        for r in self.records:
            if r.stage == stage and r.instrument == instrument:
                return r
        return None

    def output(self, stage: str, instrument: str | None = None) -> StoredOutput | None:
        rec = self.record(stage, instrument)
        return load_output(rec.output_dir) if rec and rec.output_dir else None

    def diagnostics(self, stage: str, instrument: str | None = None) -> list[dict]:
        """Plot data of one stage output (see :meth:`calib_core.stages.base.Stage.diagnostics`)."""
        rec = self.record(stage, instrument)
        out = self.output(stage, instrument)
        if rec is None or out is None:
            return []
        upstream = _StoredOutputs({(r.stage, r.instrument): r.output_dir for r in self.records if r.output_dir})
        ctx = StageContext(planet=self.planet, instrument=instrument,
                           stage_cfgs=self.validated.stages if self.validated else {}, upstream=upstream)
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


# ---------------------------------------------------------------------------
# data resolution and checksums
# ---------------------------------------------------------------------------


def resolve_planet(vc: ValidatedConfig):
    """Open the planet the config points at (generating the demo planet when ``data.root`` is null)."""
    from .io import demo, open_planet

    data = vc.data
    if data.root is None:
        root = demo.ensure_demo(seed=data.demo_seed)
        return open_planet(root, planet_id=data.planet_id, split=data.split, visit=data.visit)
    return open_planet(Path(str(data.root)).expanduser(), planet_id=data.planet_id, split=data.split,
                       visit=data.visit)


def _sha256(path: Path, cache: dict) -> str:
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    if key not in cache:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        cache[key] = h.hexdigest()
    return cache[key]


def input_checksums(planet, instruments: list[str], cache_file: Path) -> dict[str, str]:
    """sha256 of every input file of the visit (cached by path, size and mtime)."""
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    files: dict[str, Path] = {}
    for inst in instruments:
        files[f"{inst}/signal"] = planet.signal_path(inst)
        for name in CALIBRATION_NAMES:
            files[f"{inst}/{name}"] = planet.calibration_dir(inst) / f"{name}.parquet"
    for name, p in planet.metadata_paths().items():
        files[name] = Path(p)
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DataLayoutError(f"{missing[0]}: input file not found" + (f" (and {len(missing) - 1} more)"
                                                                       if len(missing) > 1 else ""))
    sums = {name: _sha256(p, cache) for name, p in sorted(files.items())}
    atomic_write_json(cache_file, cache)
    return sums


@functools.lru_cache(maxsize=None)
def _code_modules(module_name: str) -> tuple[str, ...]:
    """``module_name`` and every ``calib_core`` module it uses, directly or through another (sorted names).

    A module is used when one of its globals is that module or was defined there
    (functions, classes, compiled kernels), e.g. a stage, ``calib_core.kernels``,
    ``calib_core.stages.common``.
    """
    seen: set[str] = set()
    todo = [module_name]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for value in vars(sys.modules[name]).values():
            dep = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
            if isinstance(dep, str) and dep.startswith("calib_core.") and dep in sys.modules and dep not in seen:
                todo.append(dep)
    return tuple(sorted(seen))


def _code_hash(stage_obj: Any) -> str:
    """Hash of the source of a stage's module and of every ``calib_core`` module it uses.

    Part of every cache key: a change to the stage, to a kernel or to a shared
    helper invalidates the outputs computed with the old code.
    """
    h = hashlib.sha256()
    for name in _code_modules(inspect.getmodule(stage_obj).__name__):
        h.update(name.encode())
        h.update(inspect.getsource(sys.modules[name]).encode())
    return h.hexdigest()[:16]


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------
# provenance
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("spectramind", "numpy", "scipy", "astropy", "pyarrow", "omegaconf", "hydra-core",
                "batman-package", "photutils"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@functools.lru_cache(maxsize=1)
def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def write_depths_csv(path: Path, planet_id: int, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Kaggle submission layout: ``planet_id, wl_1..wl_283, sigma_1..sigma_283`` (one row)."""
    n = len(mu)
    header = ["planet_id", *[f"wl_{i + 1}" for i in range(n)], *[f"sigma_{i + 1}" for i in range(n)]]
    row = [str(planet_id), *[repr(float(v)) for v in mu], *[repr(float(v)) for v in sigma]]
    atomic_write_text(path, ",".join(header) + "\n" + ",".join(row) + "\n")


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
        self.scratch = run_dir / ".scratch"

    def _report(self, stage: str, inst: str | None, frac: float, msg: str = "") -> None:
        if self.progress is not None:
            self.progress(stage, inst, frac, msg)

    def _out_dir(self, name: str, inst: str | None, cfg: Any) -> Path:
        base = self.run_dir / "calib" if cfg.cache.write_intermediate else self.scratch
        return base / name / (inst or PLANET_SCOPE_DIR)

    def _cached(self, name: str, inst: str | None, key: str, force: bool) -> StoredOutput | None:
        """The stored output of ``name`` when caching is on, not forced, and its key matches."""
        cfg = self.vc.stages[name]
        if not cfg.cache.enabled or force:
            return None
        out = load_output(self._out_dir(name, inst, cfg))
        return out if out is not None and out.meta.get("cache_key") == key else None

    def _use_cached(self, name: str, inst: str | None, key: str, cached: StoredOutput) -> StoredOutput:
        rec = StageRecord(name, inst, "cached", key, output_dir=str(cached.path))
        rec.metrics = cached.meta.get("metrics", {})
        # thresholds are not part of the key: judge the stored metrics with today's gates
        rec.gates = self._gates(get_stage(name), self.vc.stages[name], rec.metrics)
        self.records.append(rec)
        self._raise_on_error_gate(rec)
        self.outputs[(name, inst)] = cached
        self._report(name, inst, 1.0, "cached")
        return cached

    def _ctx(self, name: str, inst: str | None, planet) -> StageContext:
        return StageContext(
            planet=planet, instrument=inst, stage_cfgs=self.vc.stages, chunk_frames=self.vc.runtime.chunk_frames,
            upstream=self.outputs, progress=lambda f, m="": self._report(name, inst, f, m),
        )

    def run_stage(self, name: str, inst: str | None, inp: Any, key: str, planet, force: bool) -> StoredOutput:
        cached = self._cached(name, inst, key, force)
        if cached is not None:
            return self._use_cached(name, inst, key, cached)
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
        return self._run_and_commit(name, inst, opened[-1][1], key, planet, streamed)

    def _run_and_commit(self, name: str, inst: str | None, inp: Any, key: str, planet,
                        streamed: list[tuple[str, str, Any, StreamedSource]]) -> StoredOutput:
        """Run one stage (and finish the streams feeding it); judge every gate; commit only if none stops the run."""
        stage = get_stage(name)
        cfg = self.vc.stages[name]
        out_dir = self._out_dir(name, inst, cfg)
        rec = StageRecord(name, inst, "ran", key, output_dir=str(out_dir))
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
        self._report(name, inst, 1.0, f"done in {rec.seconds:.2f} s")
        return output

    @staticmethod
    def _meta(rec: StageRecord, cfg: Any, extra: dict) -> dict:
        return {
            "stage": rec.stage, "instrument": rec.instrument, "cache_key": rec.cache_key, "seconds": rec.seconds,
            "config": OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True),
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
        data_key = _key(OmegaConf.to_container(vc.cfg.data, resolve=True), checksums)
        last: dict[str, tuple[str, StoredOutput | RawInput]] = {}
        for inst in vc.data.instruments:
            key = _key(data_key, inst)
            inp: Any = RawInput(planet, inst)
            group: list[tuple[str, str]] = []      # streamed stages waiting for the stage that stores frames
            for i, name in enumerate(inst_stages):
                key = self._chain_key(key, name)
                if self._streams_into(name, inst_stages[i + 1] if i + 1 < len(inst_stages) else None):
                    group.append((name, key))
                    continue
                if group:
                    out = self.run_streamed(group, name, inst, inp, key, planet, forced)
                    group = []
                else:
                    out = self.run_stage(name, inst, self._as_input(name, inp), key, planet, name in forced)
                self.outputs[(name, inst)] = out
                inp = out
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
            key = self._chain_key(key, name)
            out = self.run_stage(name, None, inp, key, planet, name in forced)
            self.outputs[(name, None)] = out
            inp = out

    def _streams_into(self, name: str, successor: str | None) -> bool:
        """Stream ``name`` into its successor: its planes are not kept, it can stream, the successor takes a stream."""
        cfg = self.vc.stages[name]
        return (successor is not None and not cfg.cache.write_intermediate and get_stage(name).can_stream(cfg)
                and get_stage(successor).accepts_stream)

    def _chain_key(self, upstream: str, name: str) -> str:
        section = OmegaConf.to_container(self.vc.cfg.calib[name], resolve=True)
        section.pop("cache", None)        # cache policy never changes results
        section.pop("logging", None)
        section.pop("quality_checks", None)
        return _key(upstream, name, section, _code_hash(get_stage(name)))

    @staticmethod
    def _as_input(name: str, inp: Any) -> Any:
        """Frame stages read a stored output through a chunked :class:`FrameSource`."""
        if isinstance(inp, StoredOutput) and get_stage(name).input_kind == "frames":
            return inp.frames()
        return inp


def _summary_line(result: RunResult, vc: ValidatedConfig, planet_id: Any, seconds: float) -> str:
    counts: dict[str, int] = {}
    for r in result.records:
        counts[r.status] = counts.get(r.status, 0) + 1
    warn = sum(1 for r in result.records for g in r.gates if not g.passed)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return (f"{stamp} | profile={vc.cfg.calib.get('profile', '?')} | planet={planet_id} | status={result.status}"
            f" | stages " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            + f" | failed_gates={warn} | config={result.config_hash[:12]} | {seconds:.1f}s"
            + (f" | {result.message}" if result.message else ""))


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
    calib_core.config.ConfigError, calib_core.io.DataLayoutError, QCError
        Invalid config, unreadable data, or an ``error`` gate failed.  Files
        written before the failure stay consistent: completed stages are
        committed, the failing one is not, and ``qc.json`` records the failure.
    """
    t_start = time.perf_counter()
    vc = validate_config(cfg)
    run_dir = Path(run_dir if run_dir is not None else cfg.run_dir).expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    planet = resolve_planet(vc)
    # every input of every instrument is checked before anything is computed or written
    validate_planet(planet, list(vc.data.instruments))
    chash = config_hash(cfg)
    atomic_write_text(run_dir / "config.yaml", config_to_yaml(cfg))
    checksums = input_checksums(planet, list(vc.data.instruments), run_dir / ".checksums.json")
    runner = _Runner(vc, run_dir, progress, force_error_gates)
    result = RunResult(run_dir, "ok", chash, runner.records, planet=planet, validated=vc)
    try:
        runner.run(planet, checksums)
    except Exception as exc:
        result.status = "failed"
        result.message = str(exc) if isinstance(exc, QCError) else f"{type(exc).__name__}: {exc}"
        if raise_on_failure:
            raise
    finally:
        seconds = time.perf_counter() - t_start
        _write_run_files(result, vc, planet, checksums, seconds)
    return result


def _write_run_files(result: RunResult, vc: ValidatedConfig, planet, checksums: dict, seconds: float) -> None:
    run_dir = result.run_dir
    qc: dict[str, Any] = {"status": result.status, "message": result.message, "stages": {}}
    for r in result.records:
        qc["stages"].setdefault(r.stage, {})[r.instrument or PLANET_SCOPE_DIR] = r.to_json()
    atomic_write_json(run_dir / "qc.json", qc)
    depths = result.output("depths") if result.status == "ok" else None
    if depths is not None:
        write_depths_csv(run_dir / "depths.csv", planet.planet_id, depths.fields["mu"], depths.fields["sigma"])
    calibrated = result.output("top_level_calib") if result.status == "ok" else None
    if calibrated is not None and not calibrated.meta.get("metrics", {}).get("skipped"):
        write_depths_csv(run_dir / "depths_calibrated.csv", planet.planet_id,
                         calibrated.fields["mu"], calibrated.fields["sigma"])
    atomic_write_json(run_dir / "run_hash_summary.json", {
        "config_hash": result.config_hash,
        "profile": vc.cfg.calib.get("profile"),
        "status": result.status,
        "message": result.message,
        "planet": {"root": str(planet.root), "split": planet.split, "planet_id": planet.planet_id,
                   "visit": planet.visit},
        "input_checksums": checksums,
        "stage_cache_keys": {f"{r.stage}/{r.instrument or PLANET_SCOPE_DIR}": {"key": r.cache_key,
                                                                              "status": r.status}
                             for r in result.records},
        "versions": dict(_versions()),
        "git_commit": _git_commit(),
        "seconds": round(seconds, 3),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    # rewritten, never appended in place: a run directory may share inodes with another (hard-linked copies)
    log = run_dir / "debug_log.md"
    previous = log.read_text() if log.is_file() else ""
    atomic_write_text(log, previous + _summary_line(result, vc, planet.planet_id, seconds) + "\n")
