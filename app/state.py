"""Per-session state of the diagnostics app: the profile being edited, the data choice, the last run.

One :class:`AppState` exists per browser session (or notebook).  It owns

* ``cfg``: the effective profile (a :class:`omegaconf.DictConfig` from
  :func:`calib_core.config.compose_config`), edited key by key through
  :meth:`AppState.set_key`, which validates with the engine and refuses bad
  values with the engine's one-line message;
* the dataset choice: the built-in demo planet or a planet directory under the
  data root the app was started with (nothing outside it can be selected: an
  uploaded profile's ``data`` section is replaced by the current choice);
* a private run directory under a temporary directory, removed by
  :meth:`AppState.close`;
* the last :class:`calib_core.chain.RunResult` and the set of stale stages
  (changed since that run).

The demo planet is generated at most once per process and only read by the
sessions (:func:`demo_root`).  Likewise the first run of an unchanged profile
is computed once per process (:func:`shared_run_dir`): a new session's run
directory is seeded with hard links to those stage outputs, so its first run
finds every stage in the engine's cache.  The engine never writes a committed
output in place (it replaces whole directories), so the shared files stay
read-only.
"""

from __future__ import annotations

import atexit
import copy
import functools
import os
import shutil
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import param
from omegaconf import DictConfig, OmegaConf, open_dict

from calib_core.config import ConfigError, compose_config, config_hash, config_to_yaml, validate_config
from calib_core.config.compose import RESERVED_CALIB_KEYS
from calib_core.display import DEPTH_UNITS, HIST_SCALES, STRETCHES, Display, apply_display
from calib_core.paths import config_files
from calib_core.plan import invalidated_by, regated_by, schedule
from calib_core.stages import stage_info

__all__ = ["AppState", "DISPLAY_PARAMS", "Dataset", "INSTRUMENTS", "PROFILES", "Progress", "RunOutcome", "demo_root",
           "builtin_profile", "list_datasets", "prewarm", "shared_run_dir", "start_prewarm"]

PROFILES = ("fast", "nominal", "strict")             #: built-in profiles (configs/calib/<name>.yaml)
INSTRUMENTS = ("AIRS-CH0", "FGS1")                   #: instruments whose diagnostics can be shown
DEMO_LABEL = "Demo planet (synthetic, with truth)"

_demo_lock = threading.Lock()
_shared_lock = threading.Lock()
_shared_runs: dict[str, tuple[threading.Lock, Path]] = {}


@functools.cache
def _demo_root_cached(seed: int) -> Path:
    from calib_core.sim import ensure_demo

    return ensure_demo(seed=seed)


def demo_root(seed: int = 0) -> Path:
    """Root of the demo dataset, generated once per process (thread-safe) and shared read-only."""
    with _demo_lock:
        return _demo_root_cached(seed)


@functools.cache
def _compose_builtin(name: str) -> DictConfig:
    return compose_config(f"calib/{name}")


def builtin_profile(name: str) -> DictConfig:
    """A private copy of built-in profile ``name`` (composed once per process).

    Raises
    ------
    calib_core.config.ConfigError
        Unknown profile.
    """
    return copy.deepcopy(_compose_builtin(name))


_OWNER_FILE = ".owner-pid"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owned_tempdir(prefix: str, parent: str | Path | None = None) -> Path:
    """``mkdtemp`` that records this process as owner, after removing the leftovers of dead owners.

    A server stopped by SIGTERM or SIGKILL never runs its exit handlers, and
    each app process leaves about a gigabyte of runs behind; the next app
    process sweeps every ``prefix*`` directory whose owner is gone.
    Directories without an owner file (another program's, or one being
    created) are left alone.
    """
    parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    for old in parent.glob(f"{prefix}*"):
        try:
            pid = int((old / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    (path / _OWNER_FILE).write_text(str(os.getpid()))
    return path


@functools.cache
def _shared_root() -> Path:
    root = owned_tempdir("spectramind-app-shared-")
    atexit.register(shutil.rmtree, root, True)
    return root


def shared_run_dir(cfg: DictConfig, progress: Callable | None = None) -> Path:
    """Run directory of ``cfg`` computed once per process (per config hash) and shared read-only.

    Concurrent callers with the same config wait for the one computation; ``progress`` is
    :func:`calib_core.chain.run_chain`'s callback for the caller that computes.

    Raises
    ------
    Exception
        Whatever :func:`calib_core.chain.run_chain` raised (nothing is shared then).
    """
    from calib_core.chain import run_chain

    key = config_hash(cfg)
    with _shared_lock:
        lock, run_dir = _shared_runs.setdefault(key, (threading.Lock(), _shared_root() / key[:16]))
    with lock:
        if not (run_dir / "run_hash_summary.json").is_file():
            shutil.rmtree(run_dir, ignore_errors=True)
            result = run_chain(cfg, run_dir=run_dir, progress=progress)
            if result.status != "ok":
                shutil.rmtree(run_dir, ignore_errors=True)
    return run_dir


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file of ``src`` into ``dst`` (copy where links are impossible)."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link, dirs_exist_ok=True)


def prewarm(data_root: str | Path | None = None, profile: str = "nominal") -> Path:
    """Compute the run a new session starts with (see :func:`shared_run_dir`); returns its directory."""
    state = AppState(data_root=data_root, profile=profile)
    try:
        return shared_run_dir(state.prepare_run())
    finally:
        state.close()


@functools.cache
def start_prewarm(data_root: Path | None = None) -> threading.Thread:
    """Run :func:`prewarm` once per process (per data root) in a background thread."""
    thread = threading.Thread(target=prewarm, args=(data_root,), name="spectramind-prewarm", daemon=True)
    thread.start()
    return thread


#: the AppState parameters that make up :attr:`AppState.display` (one per :class:`Display` field)
DISPLAY_PARAMS = tuple(f.name for f in fields(Display))
_DISPLAY = Display()


@dataclass(frozen=True)
class Dataset:
    """One selectable planet.

    Attributes
    ----------
    label : str
        Text shown in the picker.
    root : str or None
        Dataset root (``None``: the built-in demo planet).
    split : str
        ``train`` or ``test``.
    planet_id : int or None
        Planet id (``None``: the demo planet).
    """

    label: str
    root: str | None = None
    split: str = "train"
    planet_id: int | None = None


def list_datasets(data_root: str | Path | None, refused: list[str] | None = None) -> list[Dataset]:
    """The demo planet plus every planet directory of the Kaggle-layout dataset at ``data_root``.

    Parameters
    ----------
    data_root : str or pathlib.Path or None
        The only dataset root the app may read; ``None`` offers the demo planet only.
    refused : list of str, optional
        Receives one line per split or planet directory left out because it leads outside the root
        (a symlink); without it such a directory raises :class:`calib_core.io.DataLayoutError`.

    Returns
    -------
    list of Dataset
    """
    from calib_core.io import DataLayoutError, list_planets

    datasets = [Dataset(DEMO_LABEL)]
    if data_root is None:
        return datasets
    root = Path(data_root).expanduser().resolve()
    for split in ("train", "test"):
        if (root / split).is_dir():
            try:
                ids = list_planets(root, split, refused=refused)
            except DataLayoutError as exc:
                if refused is None:
                    raise
                refused.append(str(exc))
                continue
            datasets += [Dataset(f"{split}/{pid}", str(root), split, pid) for pid in ids]
    return datasets


def _one_line(exc: BaseException) -> str:
    """An engine failure as :func:`calib_core.chain.run_chain` words it in ``RunResult.message`` (the same
    fault reads the same whether the session's run or the shared first run met it)."""
    from calib_core.stages.base import QCError, StageError

    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, (QCError, StageError)) or type(exc).__name__ in ("ConfigError", "DataLayoutError",
                                                                        "RunDirBusy"):
        return text
    return f"{type(exc).__name__}: {text}"


@dataclass
class Progress:
    """Where a running chain is (written by the worker thread, read by the UI)."""

    fraction: float = 0.0
    text: str = ""


@dataclass
class RunOutcome:
    """What :meth:`AppState.execute` returns: a result, or the error that stopped the run."""

    result: Any = None
    error: BaseException | None = None
    from_stage: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """The run completed (every enabled stage ran or was cached)."""
        return self.error is None and self.result is not None and self.result.status == "ok"


class AppState(param.Parameterized):
    """Everything one session of the app knows; the UI is derived from it.

    Parameters
    ----------
    data_root : str or pathlib.Path, optional
        Dataset root the session may read (besides the demo planet).
    work_dir : str or pathlib.Path, optional
        Parent of the session's temporary run directory (default: the system temp dir).
    profile : str
        Initial built-in profile.
    """

    profile = param.String(default="nominal", doc="name of the loaded profile (built-in name or uploaded file)")
    dataset = param.Selector(default=DEMO_LABEL, objects=[DEMO_LABEL], doc="the planet the chain runs on")
    instrument = param.Selector(default="AIRS-CH0", objects=list(INSTRUMENTS),
                                doc="instrument whose diagnostics are shown")
    cfg = param.Parameter(doc="the effective profile being edited (DictConfig)")
    revision = param.Integer(default=0, doc="bumped whenever cfg is replaced as a whole")
    result = param.Parameter(default=None, doc="last RunResult (None before the first run)")
    stale = param.List(default=[], item_type=str, doc="stages whose shown results predate a config change")
    running = param.Boolean(default=False, doc="a run is in progress")
    error = param.String(default="", doc="last refused value or failed run, shown to the user")
    error_count = param.Integer(default=0, doc="bumped with every error, so repeated messages are shown again")
    runs = param.Integer(default=0, doc="number of finished runs (successful or not)")
    # display options of the stage tabs (calib_core.display): how plots are shown, never what is computed
    hist_scale = param.Selector(default=_DISPLAY.hist_scale, objects=list(HIST_SCALES),
                                doc="histogram counts: log, linear")
    stretch = param.Selector(default=_DISPLAY.stretch, objects=list(STRETCHES), doc="colour stretch of images")
    clip = param.Boolean(default=_DISPLAY.clip, doc="clip image colours to the 1st..99th percentile")
    depth_unit = param.Selector(default=_DISPLAY.depth_unit, objects=list(DEPTH_UNITS), doc="unit of transit depths")
    bin_channels = param.Integer(default=_DISPLAY.bin_channels, bounds=(1, 64),
                                 doc="adjacent channels averaged in depth spectra")

    def __init__(self, data_root: str | Path | None = None, work_dir: str | Path | None = None,
                 profile: str = "nominal", **params: Any):
        super().__init__(**params)
        self.data_root = Path(data_root).expanduser().resolve() if data_root is not None else None
        #: planets of the root not offered because they lead outside it (shown under the picker)
        self.refused_planets: list[str] = []
        self.datasets = {d.label: d for d in list_datasets(self.data_root, self.refused_planets)}
        self.param.dataset.objects = list(self.datasets)
        with param.discard_events(self):
            # started on a data root: open its first planet; otherwise the demo planet
            self.dataset = list(self.datasets)[1 if len(self.datasets) > 1 else 0]
        self.run_dir = owned_tempdir("spectramind-app-session-", work_dir)
        # removed by close(), or when the state is garbage-collected / the process exits
        self._remove_run_dir = weakref.finalize(self, shutil.rmtree, str(self.run_dir), True)
        self.progress = Progress()
        self.last_run_seconds = 0.0
        self._replace_cfg(builtin_profile(profile), profile)

    # ------------------------------------------------------------------ profile

    @property
    def stages(self) -> list[str]:
        """Stage sections of the profile, in execution order."""
        return self.stages_of(self.cfg)

    @property
    def enabled(self) -> list[str]:
        """Enabled stages, in execution order."""
        return [s for s in self.stages if self.cfg.calib[s].enabled]

    @property
    def config_hash(self) -> str:
        """:func:`calib_core.config.config_hash` of the current profile."""
        return config_hash(self.cfg)

    def _apply_dataset(self, cfg: DictConfig) -> None:
        d = self.datasets[self.dataset]
        with open_dict(cfg):
            cfg.data.root = d.root
            cfg.data.split = d.split
            cfg.data.planet_id = d.planet_id
            cfg.runtime.from_stage = None

    def _replace_cfg(self, cfg: DictConfig, profile: str) -> None:
        """Adopt a validated profile, pointed at the selected dataset (a listed, hence valid, choice).

        The files it names must lie under the data root, the session's run directory or ``configs/``
        (:func:`calib_core.paths.config_files`).  Only what the new profile invalidates becomes stale:
        loading a profile identical to the current one leaves every result current (and the next run
        finds every stage in the cache).

        Raises
        ------
        calib_core.config.ConfigError
            A file value is refused (the profile is not adopted).
        """
        self._apply_dataset(cfg)
        config_files(cfg, self.run_dir)
        old = self.cfg
        if old is None or self.result is None:
            stale = list(self.stages_of(cfg))
        else:
            changed = set(invalidated_by(old, cfg, self.run_dir)) | set(regated_by(old, cfg))
            stale = [s for s in self.stages_of(cfg) if s in changed or s in self.stale]
        self.param.update(cfg=cfg, profile=profile, stale=stale, revision=self.revision + 1, error="")

    @staticmethod
    def stages_of(cfg: DictConfig) -> list[str]:
        """Stage sections of ``cfg`` in execution order."""
        return [str(k) for k in cfg.calib.keys() if k not in RESERVED_CALIB_KEYS]

    def load_profile(self, name: str) -> bool:
        """Load built-in profile ``name`` (``fast``, ``nominal``, ``strict``); False and an error if refused."""
        try:
            self._replace_cfg(builtin_profile(name), name)
        except ConfigError as exc:
            self.report_error(str(exc))
            return False
        return True

    def load_profile_file(self, filename: str, content: bytes) -> bool:
        """Load a profile YAML (e.g. one exported earlier); its ``data`` section is replaced by the dataset choice.

        Returns
        -------
        bool
            False (and an error message) if the file is not a valid profile.
        """
        path = self.run_dir / "uploaded" / Path(filename or "profile.yaml").name
        if path.suffix not in (".yaml", ".yml"):
            path = path.with_suffix(".yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        try:
            self._replace_cfg(compose_config(str(path)), path.name)
        except ConfigError as exc:
            self.report_error(f"{path.name}: {exc}")
            return False
        except Exception as exc:  # an uploaded file may hold anything: report it, keep the session alive
            first = str(exc).splitlines()[0] if str(exc) else ""
            self.report_error(f"{path.name}: not a valid profile ({type(exc).__name__}: {first})")
            return False
        return True

    @param.depends("dataset", watch=True)
    def _on_dataset(self) -> None:
        """Point the profile at the selected planet (the selector only offers allowed planets)."""
        try:
            self._replace_cfg(copy.deepcopy(self.cfg), self.profile)
        except ConfigError as exc:      # a file value that only the new dataset's root puts outside
            self.report_error(str(exc))

    def value(self, key: str) -> Any:
        """The current value of a dotted key (containers as plain Python)."""
        node = OmegaConf.select(self.cfg, key)
        return OmegaConf.to_container(node) if OmegaConf.is_config(node) else node

    def set_key(self, key: str, value: Any) -> bool:
        """Set dotted key ``calib.<stage>.<path>`` after validating the whole profile with the engine.

        The stages whose results the change invalidates (the engine's
        :func:`calib_core.plan.invalidated_by`, which its cache keys follow) and
        those whose QC gates it re-judges become stale.  A refused value leaves
        the profile unchanged and sets :attr:`error`.

        Returns
        -------
        bool
            True if the value was accepted.
        """
        parts = key.split(".")
        if len(parts) < 3 or parts[0] != "calib" or parts[1] not in self.stages:
            self.report_error(f"{key}: not a stage key of this profile")
            return False
        if OmegaConf.select(self.cfg, key, default="__missing__") == "__missing__":
            self.report_error(f"{key} = {value!r}: no such key")
            return False
        candidate = copy.deepcopy(self.cfg)
        OmegaConf.update(candidate, key, value, merge=False)
        try:
            validate_config(candidate)
            config_files(candidate, self.run_dir)       # files only under the data root, run dir, configs/
            changed = set(invalidated_by(self.cfg, candidate, self.run_dir)) | set(regated_by(self.cfg, candidate))
        except ConfigError as exc:
            self.report_error(str(exc))
            return False
        stale = [s for s in self.stages if s in self.stale or s in changed]
        self.param.update(cfg=candidate, stale=stale, error="")
        return True

    def report_error(self, message: str) -> None:
        """Show ``message`` to the user (the app keeps working)."""
        self.param.update(error=message, error_count=self.error_count + 1)

    def export_yaml(self) -> str:
        """YAML of the tuned profile; ``spectramind calibrate --config-name <file>`` reproduces this session's run.

        A tuned built-in profile gets its own ``run_dir`` (``runs/<profile>-tuned-<hash>``), so running the
        export on the command line does not overwrite the built-in profile's run (``run_dir`` is not part of
        the config hash: the results are the same).
        """
        if not self.tuned:
            return config_to_yaml(self.cfg)
        cfg = copy.deepcopy(self.cfg)
        with open_dict(cfg):
            cfg.run_dir = f"runs/{self._export_stem}"
        return config_to_yaml(cfg)

    @property
    def tuned(self) -> bool:
        """The profile is a built-in one whose values were edited in the app."""
        if self.profile not in PROFILES:
            return False
        base = builtin_profile(self.profile)
        self._apply_dataset(base)
        return config_hash(base) != self.config_hash

    @property
    def _export_stem(self) -> str:
        stem = Path(self.profile).stem
        return f"{stem}-tuned-{self.config_hash[:8]}" if self.tuned else stem

    @property
    def export_filename(self) -> str:
        """File name offered for the exported profile (``spectramind_<profile>-tuned_<hash>.yaml`` once edited)."""
        stem = Path(self.profile).stem + ("-tuned" if self.tuned else "")
        return f"spectramind_{stem}_{self.config_hash[:8]}.yaml"

    # ------------------------------------------------------------------ running

    @staticmethod
    def planned_steps(cfg: DictConfig) -> list[tuple[str, str | None]]:
        """``(stage, instrument)`` pairs of a (validated) profile in the order the engine runs them."""
        return schedule(cfg)

    def prepare_run(self, from_stage: str | None = None) -> DictConfig:
        """The config to run: the engine's cache recomputes exactly the stages a change invalidated.

        Parameters
        ----------
        from_stage : str, optional
            Force recomputation from this stage (and of every later stage).
        """
        cfg = copy.deepcopy(self.cfg)
        with open_dict(cfg):
            cfg.runtime.from_stage = from_stage if from_stage in self.enabled else None
        self.progress = Progress(0.0, "starting")
        return cfg

    def execute(self, cfg: DictConfig, seed: bool = False) -> RunOutcome:
        """Run the chain on ``cfg`` in this session's run directory; safe to call from a worker thread.

        Touches no parameter: only :attr:`progress` is written while it runs.

        Parameters
        ----------
        cfg : DictConfig
            From :meth:`prepare_run`.
        seed : bool
            First run of the session: seed the run directory from the process-wide run of the
            same config (:func:`shared_run_dir`), so only what this session changes is computed.
        """
        from calib_core.chain import run_chain

        steps = self.planned_steps(cfg)
        index = {step: i for i, step in enumerate(steps)}

        def on_progress(stage: str, instrument: str | None, fraction: float, message: str) -> None:
            done = index.get((stage, instrument), 0) + fraction
            where = f"{stage_info(stage).title}" + (f" · {instrument}" if instrument else "")
            self.progress = Progress(done / max(len(steps), 1), f"{where}: {message}")

        t0 = time.perf_counter()
        try:
            if cfg.data.root is None:
                demo_root(int(cfg.data.demo_seed))
            if seed:
                shared = shared_run_dir(cfg, progress=on_progress)
                for part in ("calib", ".scratch"):     # .scratch: the outputs of stages that keep no planes
                    if (shared / part).is_dir():
                        _link_tree(shared / part, self.run_dir / part)
            result = run_chain(cfg, run_dir=self.run_dir, progress=on_progress, raise_on_failure=False)
        except Exception as exc:  # any engine failure is shown, never kills the session
            return RunOutcome(error=exc, from_stage=cfg.runtime.from_stage, seconds=time.perf_counter() - t0)
        return RunOutcome(result=result, from_stage=cfg.runtime.from_stage, seconds=time.perf_counter() - t0)

    def finish_run(self, outcome: RunOutcome) -> None:
        """Publish a run's outcome (call on the session's thread).

        A run stopped by a QC gate with ``action_on_fail: error`` still publishes its records
        (the failing gate shows as ``fail``); that stage and the later ones stay stale.
        """
        number = self.runs + 1
        if outcome.error is not None:
            exc = outcome.error
            self.progress = Progress(self.progress.fraction, f"run #{number} failed")
            self.runs = number
            self.report_error(f"run failed: {_one_line(exc)}")
            return
        result = outcome.result
        self.last_run_seconds = outcome.seconds
        failed = [r.stage for r in result.records if r.status == "failed"]
        stale = self.enabled[self.enabled.index(failed[0]):] if failed and failed[0] in self.enabled else []
        if result.status == "ok":
            self.progress = Progress(1.0, f"run #{number} done: ok")
            self.param.update(result=result, stale=stale, error="", runs=number)
        else:
            self.progress = Progress(self.progress.fraction, f"run #{number} failed")
            self.param.update(result=result, stale=stale or list(self.stale), runs=number)
            self.report_error(f"run failed: {result.message}")

    def run(self, from_stage: str | None = None) -> Any:
        """Run the chain synchronously (notebooks, tests); returns the RunResult or None on failure."""
        self.running = True
        try:
            outcome = self.execute(self.prepare_run(from_stage), seed=self.result is None and from_stage is None)
        finally:
            self.running = False
        self.finish_run(outcome)
        return outcome.result

    def record(self, stage: str) -> Any:
        """The StageRecord shown for ``stage``: the selected instrument's, or the planet-level one."""
        if self.result is None:
            return None
        if stage_info(stage).scope == "planet":
            return self.result.record(stage, None)
        return self.result.record(stage, self.instrument)

    @property
    def display(self) -> Display:
        """The session's display options (the parameters named in :data:`DISPLAY_PARAMS`)."""
        return Display(**{name: getattr(self, name) for name in DISPLAY_PARAMS})

    def diagnostics(self, stage: str) -> list[dict]:
        """Plot data of ``stage`` for the selected instrument (planet stages: the planet), as displayed."""
        rec = self.record(stage)
        if rec is None or rec.status in ("skipped", "failed"):
            return []
        display = self.display
        return [apply_display(item, display) for item in self.result.diagnostics(stage, rec.instrument)]

    def close(self) -> None:
        """Remove the session's run directory."""
        self._remove_run_dir()
