"""Issue 11: the cache is never stale -- every config key, changed, gives a re-run equal to a fresh run.

For every profile (fast, nominal, strict) on a tiny demo planet, every leaf key of every stage section is
changed to another valid value (its schema's choices and bounds), the profile is re-run into a copy of
the base run's directory (the cache of the unchanged config) and every committed array of every stage,
``depths.csv`` and the run state are compared bit for bit with a fresh run of the changed config.

What keeps it affordable (a full chain costs a few seconds even at 32 read pairs, and there are ~780
keys):

* the keys of one stage's section that change results are changed *together* (one config per section;
  split into its sub-sections when the combination is invalid or makes the run fail, and a sub-section into
  single keys when it is invalid), and
  the keys that must never change a result (``quality_checks``, ``logging``, ``cache``) of all stages
  together, in four groups.  A stale cache shows as a stage that reads a changed key without it being in
  its cache key; changing several keys of one section at once hides that only if the changes cancel;
* re-runs start from a hard-linked copy of the base run directory (stage outputs are replaced by
  rename, never written in place, so the copy and the base never share a changed file);
* the "fresh" run is a copy of the base directory run with ``runtime.from_stage`` at the earliest stage
  that can read a changed key, found here from the stages' declared reads -- not from the runner's cache
  keys or :func:`calib_core.plan.invalidated_by`, which are what is tested.  A stage can only read its own
  section and what it declares (:class:`calib_core.stages.base.StageContext` refuses undeclared reads),
  so the stages before that one compute the same numbers; for groups that no stage's result may depend
  on, the fresh run is a run into an empty directory.

A change that makes both runs fail (a QC gate with ``action_on_fail: error``, a stage that cannot
proceed) must fail identically: same status, same message, no ``depths.csv``, equal outputs for the
stages that completed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from calib_core.chain import run_chain
from calib_core.config import ConfigError, compose_config
from calib_core.config.base import iter_fields
from calib_core.config.compose import validate_config
from calib_core.io import open_planet
from calib_core.sim import load_truth, make_demo
from calib_core.plan import NO_RESULT_SECTIONS, invalidated_by
from calib_core.stages import stage_info
from calib_core.store import load_output

pytestmark = pytest.mark.slow

PROFILES = ("fast", "nominal", "strict")
N_PAIRS = 32                 #: the smallest demo on which every profile completes (24 pairs: too few for trace)
PID = 1100001

#: keys that have no other valid value in a profile: the I/O keys chain the stages (any other value is a
#: broken chain), and switching off a stage in the middle of the chain breaks it likewise
NO_ALTERNATIVE = {"io.input_key", "io.output_key", "enabled"}
_NONE = object()


# ---------------------------------------------------------------------------
# alternative values
# ---------------------------------------------------------------------------


def _in_bounds(x: float, meta: dict) -> bool:
    return ((meta.get("ge") is None or x >= meta["ge"]) and (meta.get("gt") is None or x > meta["gt"])
            and (meta.get("le") is None or x <= meta["le"]) and (meta.get("lt") is None or x < meta["lt"]))


def _candidates(stage: str, key: str, f: dataclasses.Field, value: Any, ctx: dict) -> list[Any]:
    """Other values for ``calib.<stage>.<key>``, most useful first (each is checked by validate_config)."""
    meta = dict(f.metadata)
    special = {
        ("dark", "per_pixel_map.path"): lambda: [ctx["dark_map"]],
        ("dark", "temperature.detector_temp_k"): lambda: [None if value is not None else 42.0],
        ("photometry", "airs.columns"): lambda: [[value[0] + 1, value[1] + 1]],      # 282 channels still
        ("photometry", "background.method"): lambda: ["none" if value != "none" else "auto"],   # valid for both
        ("phase", "ephemeris.period_days"): lambda: [ctx["period_d"] * 1.01],
        ("phase", "ephemeris.t0"): lambda: [ctx["t0_h"] + 0.02],
        ("phase", "time.start_epoch"): lambda: ["2025-03-01T12:00:00"],
        ("top_level_calib", "model_path"): lambda: [ctx["model"]],
        ("top_level_calib", "wavelengths_path"): lambda: [ctx["wavelengths"]],
        ("top_level_calib", "temperature.clamp"): lambda: [[0.2, 5.0]],
        ("top_level_calib", "corel.clamp"): lambda: [[0.2, 5.0]],
        ("top_level_calib", "metric.naive_mean"): lambda: [0.01],
        ("top_level_calib", "metric.naive_sigma"): lambda: [0.002],
    }
    if (stage, key) in special:
        return special[(stage, key)]()
    choices = meta.get("choices")
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        lo, hi = min(value), max(value)          # a range [lo, hi]: widen it
        wider = [lo - 0.1 * abs(lo or 1), hi + 0.1 * abs(hi or 1)]
        return [wider if len(value) == 2 else [v * 1.1 for v in value]]
    if isinstance(value, list) and choices:
        out = [value[:-1]] if len(value) > 1 else []
        return out + [[*value, c] for c in choices if c not in value]
    if isinstance(value, bool):
        return [not value]
    if choices:
        return [c for c in choices if c != value]
    if isinstance(value, int):
        step = 2 if meta.get("odd") else 1
        return [v for v in (value + step, value - step, value + 2 * step, value * 2) if _in_bounds(v, meta)]
    if isinstance(value, float):
        tries = (value * 1.25, value * 0.8, value + 0.5, value - 0.5) if value else (0.1, -0.1, 1.0)
        return [v for v in tries if _in_bounds(v, meta)]
    if value is None and meta.get("nullable"):
        return [1.0]
    return []


def _leaves(cfg, stage: str) -> list[tuple[str, dataclasses.Field, Any]]:
    return list(iter_fields(validate_config(cfg).stages[stage]))


def _with(cfg, changes: dict[str, Any]):
    """A copy of ``cfg`` with ``{dotted key: value}`` set, or None when the result is not a valid config."""
    new = copy.deepcopy(cfg)
    for key, value in changes.items():
        OmegaConf.update(new, key, value, merge=False)
    try:
        validate_config(new)
    except ConfigError:
        return None
    return new


def _first_valid(cfg, stage: str, key: str, f, value, ctx) -> tuple[str, Any] | None:
    for cand in _candidates(stage, key, f, value, ctx):
        if _with(cfg, {f"calib.{stage}.{key}": cand}) is not None:
            return f"calib.{stage}.{key}", cand
    return None


# ---------------------------------------------------------------------------
# runs and their outputs
# ---------------------------------------------------------------------------


def _state(result) -> dict:
    """Everything a run leaves that must not depend on the cache: status, message, arrays, depths.csv."""
    arrays = {}
    for rec in result.records:
        if rec.output_dir is None:
            continue
        out = load_output(rec.output_dir, mmap=False)
        assert out is not None, rec
        for name, arr in out.fields.items():
            arrays[f"{rec.stage}/{rec.instrument}/{name}"] = arr
    rd = result.run_dir
    files = {name: (rd / name).read_text() if (rd / name).exists() else None
             for name in ("depths.csv", "depths_calibrated.csv")}
    state = json.loads((rd / "run_state.json").read_text())
    return {"status": result.status, "message": result.message.replace(str(rd), "<run_dir>"), "arrays": arrays,
            "files": files, "run_state": state["status"], "stages": {(r.stage, r.instrument) for r in result.records
                                                     if r.status != "skipped"}}


def _assert_same(rerun: dict, fresh: dict, what: str) -> None:
    assert rerun["status"] == fresh["status"] == rerun["run_state"] == fresh["run_state"], what
    assert rerun["message"] == fresh["message"], what
    assert rerun["stages"] == fresh["stages"], what
    assert sorted(rerun["arrays"]) == sorted(fresh["arrays"]), what
    differ = [k for k, a in rerun["arrays"].items()
              if a.dtype != fresh["arrays"][k].dtype or a.shape != fresh["arrays"][k].shape
              or a.tobytes() != fresh["arrays"][k].tobytes()]
    assert not differ, f"{what}: {len(differ)} arrays differ from a fresh run: {differ[:8]}"
    assert rerun["files"] == fresh["files"], what
    if rerun["status"] != "ok":
        assert rerun["files"]["depths.csv"] is None, what


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def _earliest_reader(cfg, keys: list[str]) -> str | None:
    """First enabled stage (execution order) that reads one of ``keys``: its own section or a declared read."""
    enabled = validate_config(cfg).enabled
    for name in enabled:
        info = stage_info(name)
        for key in keys:
            path = key.removeprefix("calib.")
            if path.split(".")[0] == name:
                return name
            if any(path == p or path.startswith(p + ".") or p.startswith(path + ".") for p in info.reads_config):
                return name
    return None


class Walker:
    def __init__(self, profile: str, base_cfg, base_dir: Path, work: Path):
        self.profile, self.base_cfg, self.base_dir, self.work = profile, base_cfg, base_dir, work
        self.n = 0
        self.checked: list[str] = []
        self.outcomes: list[str] = []

    def check(self, changes: dict[str, Any], cfg, fresh_empty: bool = False) -> dict:
        """Re-run ``cfg`` into a copy of the base run and compare with a fresh run; return the fresh state."""
        self.n += 1
        what = f"{self.profile}: {changes}"
        rerun_dir = _copy(self.base_dir, self.work / f"rerun{self.n}")
        rerun = run_chain(cfg, run_dir=rerun_dir, raise_on_failure=False)
        stale = invalidated_by(self.base_cfg, cfg)
        reader = None if fresh_empty else _earliest_reader(cfg, list(changes))
        if reader is None:
            fresh_dir = self.work / f"fresh{self.n}"
            fresh_cfg = cfg
        else:
            fresh_dir = _copy(self.base_dir, self.work / f"fresh{self.n}")
            fresh_cfg = copy.deepcopy(cfg)
            OmegaConf.update(fresh_cfg, "runtime.from_stage", reader, merge=False)
        fresh = run_chain(fresh_cfg, run_dir=fresh_dir, raise_on_failure=False)
        got, want = _state(rerun), _state(fresh)
        _assert_same(got, want, what)
        # the stages the runner recomputed are the ones invalidated_by names (the app's stale marks)
        # a stage that keeps no frame planes (write_intermediate: false) runs again when its reader does -- streamed
        # into it, or its released planes recomputed: what the change costs, not what it invalidates (the
        # record's reason says so)
        cost_only = ("planes were released", "frame planes not stored")
        ran = {r.stage for r in rerun.records if r.status == "ran"}
        extra = [(r.stage, r.instrument, r.reason) for r in rerun.records if r.status == "ran"
                 and r.stage not in stale and not any(c in (r.reason or "") for c in cost_only)]
        if not any(".cache." in k for k in changes):        # cache off / moved: everything runs again
            assert not extra, (what, ran, stale, extra)
            if rerun.status == "ok":
                assert set(stale) <= ran, (what, ran, stale)
        self.checked.extend(changes)
        shutil.rmtree(rerun_dir)
        shutil.rmtree(fresh_dir)
        return want


def _walk_result_keys(w: Walker, stage: str, ctx: dict) -> list[str]:
    """Every result key of one stage section at once (then sub-sections, then single keys)."""
    no_alternative = []
    singles: dict[str, dict[str, Any]] = {}
    deferred = []
    for key, f, value in _leaves(w.base_cfg, stage):
        top = key.split(".")[0]
        if top in NO_RESULT_SECTIONS:
            continue
        change = _first_valid(w.base_cfg, stage, key, f, value, ctx)
        if change is None:
            deferred.append((key, f, value))
            continue
        singles.setdefault(top, {})[change[0]] = change[1]
    for key, f, value in deferred:     # valid only with its companions (source: config needs period_days)
        full, sub = f"calib.{stage}.{key}", singles.get(key.split(".")[0], {})
        companions = [sub, *({k: v} for k, v in sub.items())]
        cand = next((c for c in _candidates(stage, key, f, value, ctx) for other in companions
                     if _with(w.base_cfg, {**other, full: c}) is not None), _NONE)
        if cand is _NONE:
            no_alternative.append(full)
        else:
            singles.setdefault(key.split(".")[0], {})[full] = cand
    _check_group(w, {k: v for sub in singles.values() for k, v in sub.items()}, singles)
    return no_alternative


def _check_group(w: Walker, changes: dict[str, Any], parts: dict[str, dict[str, Any]] | None) -> None:
    """One combined change; split into sub-sections (then single keys) when it is invalid or makes the run fail.

    A failing combination is compared too (both runs must fail alike), but it stops the chain at the failing
    stage, so its sub-sections are walked again one by one; a sub-section that fails on its own is not split
    further (every stage before the failure, those reading the section from upstream among them, is compared,
    and the stages after it are recomputed either way: their keys chain the failing stage's).
    """
    if not changes:
        return
    cfg = _with(w.base_cfg, changes)
    if cfg is not None:
        status = w.check(changes, cfg)["status"]
        w.outcomes.append(status)
        if status == "ok" or parts is None:
            return
    if parts is not None and len(parts) > 1:
        for sub in parts.values():
            _check_group(w, sub, None)
    elif cfg is None and len(changes) > 1:
        for key, value in changes.items():
            one = {key: value}
            if _with(w.base_cfg, one) is None:      # valid only with a companion (source: config + period_days)
                one = next((pair for k, v in changes.items() if k != key
                            for pair in [{key: value, k: v}] if _with(w.base_cfg, pair) is not None), one)
            _check_group(w, one, None)
    elif cfg is None:      # a single change valid on its own (_first_valid) is never invalid here
        raise AssertionError(f"{w.profile}: {changes} is not a valid config")


def _no_result_groups(cfg) -> list[dict[str, Any]]:
    """The keys that never change a result, in four groups: thresholds + logging, actions, caching, cache off."""
    vc = validate_config(cfg)
    thresholds, actions, writes, off = {}, {}, {}, {}
    for stage in vc.enabled:
        for key, f, value in iter_fields(vc.stages[stage]):
            full = f"calib.{stage}.{key}"
            if key.split(".")[0] not in NO_RESULT_SECTIONS:
                continue
            if key == "cache.enabled":
                off[full] = False
            elif key == "cache.write_intermediate":
                writes[full] = not value
            elif key == "quality_checks.action_on_fail":
                actions[full] = "error" if value == "warn" else "warn"
            elif key == "quality_checks.enabled":
                writes[full] = not value
            else:
                cand = _candidates(stage, key, f, value, {})
                assert cand, full
                thresholds[full] = cand[0]
    return [thresholds, actions, writes, off]


@pytest.fixture(scope="module")
def walk_root(tmp_path_factory) -> tuple[Path, dict]:
    base = tmp_path_factory.mktemp("keywalk")
    root = make_demo(base / "data", seed=3, n_pairs=N_PAIRS)
    truth = load_truth(root, PID)
    np.savez(root / "not_a_model.npz", scale=np.ones(283))      # exists (under the data root); not a sigma model
    # a per-pixel dark map for both instruments (so the section's combined change runs through)
    planet = open_planet(root, PID)
    np.savez(root / "darks.npz", **{inst: planet.calibration(inst).dark * 1.1 for inst in ("FGS1", "AIRS-CH0")})
    ctx = {"t0_h": truth["t0_h"], "period_d": truth["period_d"], "dark_map": str(root / "darks.npz"),
           "model": str(root / "not_a_model.npz"), "wavelengths": str(root / "wavelengths.csv")}
    return root, ctx


@pytest.fixture(scope="module")
def base_runs(walk_root, tmp_path_factory):
    """``base(profile) -> (cfg, run_dir)``: the unchanged profile's run, made once per profile (per worker)."""
    root, _ = walk_root
    made: dict[str, tuple] = {}

    def base(profile: str):
        if profile not in made:
            run_dir = tmp_path_factory.mktemp(f"base_{profile}")
            cfg = compose_config(f"calib/{profile}", [f"data.root={root}", f"run_dir={run_dir}"])
            assert run_chain(cfg).status == "ok"
            made[profile] = (cfg, run_dir)
        return made[profile]

    return base


def _items() -> list[tuple[str, str]]:
    items = []
    for profile in PROFILES:
        stages = validate_config(compose_config(f"calib/{profile}")).enabled
        items += [(profile, stage) for stage in stages] + [(profile, "no-result keys")]
    return items


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("profile, section", _items())
def test_every_key_changed_reruns_equal_a_fresh_run(walk_root, base_runs, tmp_path, profile, section):
    _, ctx = walk_root
    cfg, base_dir = base_runs(profile)
    w = Walker(profile, cfg, base_dir, tmp_path)
    vc = validate_config(cfg)
    if section == "no-result keys":     # every stage's quality_checks, logging and cache keys, in four groups
        for group in _no_result_groups(cfg):
            changed = _with(cfg, group)
            assert changed is not None, group
            w.outcomes.append(w.check(group, changed, fresh_empty=True)["status"])
        no_alternative: list[str] = []
        every = {f"calib.{s}.{k}" for s in vc.enabled for k, _, _ in iter_fields(vc.stages[s])
                 if k.split(".")[0] in NO_RESULT_SECTIONS}
    else:
        no_alternative = _walk_result_keys(w, section, ctx)
        # what could not be changed is the chain's wiring, nothing else
        assert [k for k in no_alternative if k.split(".", 2)[2] not in NO_ALTERNATIVE] == [], no_alternative
        every = {f"calib.{section}.{k}" for k, _, _ in iter_fields(vc.stages[section])
                 if k.split(".")[0] not in NO_RESULT_SECTIONS}
    assert every - set(w.checked) == set(no_alternative), sorted(every - set(w.checked) - set(no_alternative))
    print(f"{profile} {section}: {len(every)} keys, {len(set(w.checked))} changed in {w.n} re-runs "
          f"({w.outcomes.count('ok')} ok, {w.outcomes.count('failed')} failing both ways), "
          f"{len(no_alternative)} without another valid value")


def test_trace_reads_the_phase_ephemeris_it_declares(walk_root, tmp_path):
    """The issue's case: with ``transit_mask.method: ephemeris`` trace uses phase's t0; changing it re-runs trace."""
    root, ctx = walk_root
    base = ["trace.transit_mask.method=ephemeris", f"phase.ephemeris.t0={ctx['t0_h']:.4f}"]
    cfg = compose_config("calib/fast", [f"data.root={root}", *(f"calib.{o}" for o in base)])
    w = Walker("fast+ephemeris", cfg, tmp_path / "base", tmp_path)
    assert run_chain(w.base_cfg, run_dir=w.base_dir).status == "ok"
    change = {"calib.phase.ephemeris.t0": round(ctx["t0_h"] + 0.15, 4)}
    state = w.check(change, _with(w.base_cfg, change))
    assert state["status"] == "ok"
    assert "trace" in invalidated_by(w.base_cfg, _with(w.base_cfg, change))
