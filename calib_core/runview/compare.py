"""Run snapshots (what a run produced, held in memory) and two of them compared."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..provenance import PLANET_SCOPE_DIR
from ..stages.errors import DataError
from ..store import StoredOutput
from .reading import load_stage_output, read_qc

__all__ = ["RunSnapshot", "SpectrumDiff", "compare_spectra", "config_diff", "gates_side_by_side", "read_run",
           "snapshot_result", "white_light_overlays"]


@dataclass
class RunSnapshot:
    """What one run produced, held in memory (later runs into the same directory do not change it)."""

    label: str
    status: str
    config: dict                 #: typed content of the config (:func:`calib_core.config.typed_content`)
    config_hash: str
    gates: list[dict]            #: stage, instrument, name, value, threshold, op, passed, action
    wavelength_um: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    instrument: np.ndarray       #: index into ``instruments`` per row
    instruments: list[str]
    metrics: dict                #: the depths stage's metrics (white depth, chi2, ...)
    white: dict = field(default_factory=dict)  #: instrument -> (time_h, flux, err, model) of the white-light fit


def _white_of(depths: StoredOutput) -> dict:
    """The depths stage's white-light curves and batman models (its plot rows), copied into memory."""
    f, out = depths.fields, {}
    for n, inst in enumerate(depths.meta.get("white_instruments", [])):
        t, y, e, m = (np.array(f[k][n], np.float64) for k in ("white_time_h", "white_flux", "white_err", "white_model"))
        keep = np.isfinite(t)
        out[inst] = (t[keep], y[keep], e[keep], m[keep])
    return out


def _gates_of(qc: dict) -> list[dict]:
    gates = []
    for stage, per in qc.get("stages", {}).items():
        for where, rec in per.items():
            for g in rec.get("gates", []) or []:
                gates.append({"stage": stage, "instrument": where, **g})
    return gates


def read_run(run_dir: str | Path, label: str | None = None) -> RunSnapshot:
    """Snapshot of a finished run directory (``config.yaml``, ``qc.json``, the depths output).

    Raises
    ------
    DataError
        Missing or unreadable files, or a config that does not validate.
    """
    from ..config import ConfigError, compose_config
    from ..config.compose import config_hash, typed_content

    root = Path(run_dir).expanduser().resolve()
    qc = read_qc(root)
    path = root / "config.yaml"
    if not path.is_file():
        raise DataError(f"{path}: missing")
    try:
        cfg = compose_config(str(path))
    except ConfigError as exc:
        raise DataError(f"{path}: {exc}") from None
    content = typed_content(cfg)
    if qc.get("status") == "ok":
        depths = load_stage_output(root, "depths", None, qc)
        f = depths.fields
        arrays = [np.array(f[k], np.float64) for k in ("wavelength_um", "mu", "sigma")]
        inst = np.array(f["instrument"], np.int16)
        insts = list(depths.meta.get("instruments", []))
        metrics = (qc["stages"].get("depths", {}).get(PLANET_SCOPE_DIR) or {}).get("metrics", {})
        white = _white_of(depths)
    else:
        arrays, inst, insts, metrics, white = [np.empty(0)] * 3, np.empty(0, np.int16), [], {}, {}
    return RunSnapshot(label or root.name, str(qc.get("status")), content, config_hash(cfg), _gates_of(qc),
                       *arrays, inst, insts, dict(metrics), white)


def snapshot_result(result: Any, cfg: Any, label: str) -> RunSnapshot:
    """Snapshot of a :class:`calib_core.chain.RunResult` just returned by :func:`calib_core.chain.run_chain`."""
    from ..config.compose import config_hash, typed_content

    qc = {"stages": {}}
    for r in result.records:
        qc["stages"].setdefault(r.stage, {})[r.instrument or PLANET_SCOPE_DIR] = {
            "gates": [g.to_json() for g in r.gates]}
    depths = result.output("depths") if result.status == "ok" else None
    if depths is not None:
        f = depths.fields
        arrays = [np.array(f[k], np.float64) for k in ("wavelength_um", "mu", "sigma")]
        inst, insts = np.array(f["instrument"], np.int16), list(depths.meta.get("instruments", []))
        rec = result.record("depths", None)
        metrics = {k: v for k, v in (rec.metrics if rec else {}).items() if np.isscalar(v)}
        white = _white_of(depths)
    else:
        arrays, inst, insts, metrics, white = [np.empty(0)] * 3, np.empty(0, np.int16), [], {}, {}
    return RunSnapshot(label, result.status, typed_content(cfg), config_hash(cfg), _gates_of(qc), *arrays, inst,
                       insts, metrics, white)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: node}


def config_diff(a: dict, b: dict) -> list[tuple[str, Any, Any]]:
    """Dotted keys whose values differ between two typed configs, ``(key, value_a, value_b)`` sorted by key.

    A key present on one side only shows ``None`` (written ``-`` by the app) on the other.
    """
    fa, fb = _flatten(a), _flatten(b)
    missing = object()
    rows = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, missing), fb.get(key, missing)
        if isinstance(va, tuple):
            va = list(va)
        if isinstance(vb, tuple):
            vb = list(vb)
        if va != vb:
            rows.append((key, None if va is missing else va, None if vb is missing else vb))
    return rows


@dataclass
class SpectrumDiff:
    """Two spectra on one wavelength grid and their difference in units of the combined sigma."""

    wavelength_um: np.ndarray
    mu_a: np.ndarray
    sigma_a: np.ndarray
    mu_b: np.ndarray
    sigma_b: np.ndarray
    z: np.ndarray                #: (mu_b - mu_a) / sqrt(sigma_a^2 + sigma_b^2)
    instrument: np.ndarray

    @property
    def max_abs_z(self) -> float:
        finite = np.isfinite(self.z)
        return float(np.max(np.abs(self.z[finite]))) if finite.any() else float("nan")


def compare_spectra(a: RunSnapshot, b: RunSnapshot) -> SpectrumDiff:
    """Overlay and difference of two runs' spectra (rows matched one to one: same planet and channels).

    Raises
    ------
    DataError
        A run has no spectrum (not ok), or the wavelength grids differ.
    """
    for s in (a, b):
        if s.mu.size == 0:
            raise DataError(f"run {s.label}: no spectrum (status {s.status})")
    if a.wavelength_um.shape != b.wavelength_um.shape or not np.allclose(a.wavelength_um, b.wavelength_um):
        raise DataError(f"runs {a.label} and {b.label}: different wavelength grids "
                        f"({a.wavelength_um.size} vs {b.wavelength_um.size} channels)")
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (b.mu - a.mu) / np.hypot(a.sigma, b.sigma)
    return SpectrumDiff(a.wavelength_um, a.mu, a.sigma, b.mu, b.sigma, z, a.instrument)


def white_light_overlays(a: RunSnapshot, b: RunSnapshot) -> list:
    """Typed plot data: per instrument fitted by both runs, A's and B's white light and batman models overlaid,
    titled with both white depths (ppm)."""
    from ..diagnostics import Series

    plots = []
    for inst in [i for i in a.white if i in b.white]:
        (ta, ya, ea, ma), (tb, yb, eb, mb) = a.white[inst], b.white[inst]
        da = float(a.metrics.get("white_depth", float("nan"))) * 1e6 if inst == a.metrics.get("white_instrument") \
            else float("nan")
        db = float(b.metrics.get("white_depth", float("nan"))) * 1e6 if inst == b.metrics.get("white_instrument") \
            else float("nan")
        depths = f" (white depth A {da:.0f} ppm, B {db:.0f} ppm)" if np.isfinite(da) and np.isfinite(db) else ""
        plots.append(Series(f"White light {inst}: fits of A and B{depths}", ta, ya, xlabel="time since visit start (h)",
                            ylabel="normalised flux", yerr=ea, label="A data", style="points",
                            overlay=[Series("", tb, yb, yerr=eb, label="B data", style="points"),
                                     Series("", ta, ma, label="A model"), Series("", tb, mb, label="B model")]))
    return plots


def gates_side_by_side(a: RunSnapshot, b: RunSnapshot) -> list[dict]:
    """One row per QC gate of either run: ``stage``, ``instrument``, ``name``, ``a`` and ``b`` (gate dict or None)."""
    def keyed(s: RunSnapshot) -> dict:
        return {(g["stage"], g["instrument"], g["name"]): g for g in s.gates}

    ka, kb = keyed(a), keyed(b)
    order = list(ka) + [k for k in kb if k not in ka]
    return [{"stage": k[0], "instrument": k[1], "name": k[2], "a": ka.get(k), "b": kb.get(k)} for k in order]
