"""The demo planet: :func:`make_demo` (what ``spectramind make-demo`` runs) and the cached :func:`ensure_demo`."""

from __future__ import annotations

import math
import numbers
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..io.layout import INSTRUMENTS
from .dataset import check_out_dir, dataset_lock, move_into_place, other_planets, shared_file_plan
from .detector import draw_detector, draw_systematics
from .readout import write_signal
from .scene import scaled_scene, sky_rate
from .settings import (DEFAULT_N_PAIRS, DEMO_PLANET_ID, DEMO_SEED, FGS_WAVELENGTH_UM, FIRST_READ_EXPTIME_S,
                       GENERATOR_VERSION, SIMS, airs_column_targets, airs_wavelengths, pair_times_s,
                       target_wavelengths)
from .transit import draw_spectrum, draw_system, light_curves
from .truth import write_truth_json
from .writer import write_calibration, write_metadata, write_shared

__all__ = ["demo_path", "make_demo", "ensure_demo"]


def _resolve_n_pairs(full: bool, n_pairs: int | dict | None) -> dict[str, int]:
    """Pairs per instrument from the ``full`` / ``n_pairs`` arguments of :func:`make_demo`."""
    if full and n_pairs is not None:
        raise ValueError("give either full=True or n_pairs, not both")
    if full:
        return {inst: SIMS[inst].full_pairs for inst in INSTRUMENTS}
    if n_pairs is None:
        n_pairs = DEFAULT_N_PAIRS
    if isinstance(n_pairs, numbers.Integral) and not isinstance(n_pairs, bool):
        counts = {inst: int(n_pairs) for inst in INSTRUMENTS}
    elif isinstance(n_pairs, dict) and set(n_pairs) == set(INSTRUMENTS):
        counts = {inst: int(n_pairs[inst]) for inst in INSTRUMENTS}
    else:
        raise ValueError(f"n_pairs must be an int or a dict with keys {INSTRUMENTS}, got {n_pairs!r}")
    for inst, n in counts.items():
        if not 2 <= n <= SIMS[inst].full_pairs:
            raise ValueError(f"n_pairs for {inst} must be in [2, {SIMS[inst].full_pairs}], got {n}")
    return counts


def _generate(tmp: Path, seed: int, planet_id: int, n_pairs: dict[str, int], drop_pairs: int, split: str,
              flux_scale: float = 1.0, jitter_scale: float = 1.0) -> None:
    """Generate all files of the demo planet under ``tmp`` (same relative layout as the final dataset)."""
    streams = np.random.SeedSequence(seed).spawn(1 + 3 * len(INSTRUMENTS))
    rngs = [np.random.default_rng(s) for s in streams]
    wavelengths = target_wavelengths()
    system = draw_system(rngs[0])
    spectrum = draw_spectrum(rngs[0], system["base_depth"], wavelengths)
    scenes = {inst: scaled_scene(inst, flux_scale) for inst in INSTRUMENTS}
    column_targets = {"AIRS-CH0": airs_column_targets(), "FGS1": np.zeros(1, dtype=int)}
    column_wavelength = {"AIRS-CH0": airs_wavelengths(), "FGS1": np.array([FGS_WAVELENGTH_UM])}

    planet_dir = tmp / split / str(planet_id)
    truth_dir = tmp / "truth" / str(planet_id)
    planet_dir.mkdir(parents=True)
    truth_dir.mkdir(parents=True)
    per_instrument = {}
    cosmic_rays = []
    for i, inst in enumerate(INSTRUMENTS):
        sim = SIMS[inst]
        if jitter_scale != 1.0:
            sim = replace(sim, jitter_rms_px=sim.jitter_rms_px * jitter_scale)
        rng_det, rng_sys, rng_sig = rngs[1 + 3 * i:4 + 3 * i]
        det = draw_detector(rng_det, sim)
        times, period = pair_times_s(n_pairs[inst])
        pair_time = times[1::2]
        sysm = draw_systematics(rng_sys, sim, n_pairs[inst], drop_pairs, pair_time, column_wavelength[inst],
                                 det["dead"])
        unique, inverse = np.unique(column_targets[inst], return_inverse=True)
        transit = light_curves(system, spectrum, pair_time, unique)[:, inverse]
        write_calibration(planet_dir / f"{inst}_calibration_0", det)
        write_signal(planet_dir / f"{inst}_signal_0.parquet", rng_sig, sim, scenes[inst], det, sysm, transit)
        arrays = {"flat": det["flat_true"], "dark": det["dark"], "hot": det["hot"], "dead": det["dead"],
                  "sky": sky_rate(inst, scenes[inst], np.zeros(1), np.zeros(1))[0],
                  "jitter": sysm["jitter"], "drift": sysm["drift"], "transit": transit,
                  "common_mode": sysm["common_mode"], "pair_time_s": pair_time}
        for name, arr in arrays.items():
            np.save(truth_dir / f"{inst}_{name}.npy", arr)
        per_instrument[inst] = {
            "n_pairs": n_pairs[inst], "pair_period_s": period, "cds_s": sim.cds_s,
            "first_read_exptime_s": FIRST_READ_EXPTIME_S, "jitter_rms_px": sim.jitter_rms_px,
            "drift": {**sysm["drift_params"], "definition": "1 + (d1*tau + d2*tau**2) * (1 + g*omega), "
                      "tau = 2*t/27000 s - 1, omega = 2*(lambda - 0.7)/(4.078463 - 0.7) - 1"},
            "dropped_pairs": sysm["dropped"].tolist(), "n_hot": int(det["hot"].sum()),
            "n_very_hot": det["n_very_hot"], "n_dead": int(det["dead"].sum()),
            "scene": scenes[inst],
        }
        cosmic_rays += sysm["cosmic_rays"]

    # the scales are recorded when either differs from 1, so a default planet's truth.json is unchanged
    scales = {"flux_scale": flux_scale, "jitter_scale": jitter_scale}
    write_truth_json(truth_dir, seed, planet_id, split, system, spectrum, per_instrument, cosmic_rays,
                      scales if any(v != 1.0 for v in scales.values()) else {})
    write_metadata(tmp, planet_id, split, system, spectrum)


def make_demo(out: str | os.PathLike, seed: int = DEMO_SEED, full: bool = False, planet_id: int | None = None, *,
              n_pairs: int | dict[str, int] | None = None, drop_pairs: int = 0, overwrite: bool = False,
              split: str = "train", flux_scale: float = 1.0, jitter_scale: float = 1.0) -> Path:
    """Write one synthetic planet in the 2025 Kaggle layout, with its ground truth.

    Parameters
    ----------
    out : str or os.PathLike
        Dataset root: absent, empty, or an existing dataset (Kaggle layout) to add the planet to.
    seed : int
        Seed of all random streams; the output bytes are identical for a given seed.
    full : bool
        Full size: 5625 AIRS-CH0 pairs (11250 frames, 4.8 s period) and 67500 FGS1 pairs
        (135000 frames, 0.4 s period).
    planet_id : int, optional
        Planet id (directory name); default :data:`DEMO_PLANET_ID`.
    n_pairs : int or dict, optional
        Read pairs per instrument (an int for both, or ``{"AIRS-CH0": n, "FGS1": m}``);
        default :data:`DEFAULT_N_PAIRS` (pair period 21.6 s over the 7.5 h visit).
    drop_pairs : int
        Pairs per instrument lost in telemetry: both reads are written as all-zero DN rows.
    overwrite : bool
        Replace an existing planet of the same id (its directory, truth and rows), or write into
        a non-empty directory that is not a dataset.  Other planets are never touched.
    split : str
        ``"train"`` (writes ``train.csv`` labels) or ``"test"`` (no labels file).
    flux_scale : float
        Stellar brightness: the star's electron rates of both instruments times this factor
        (> 0; 0.1 = a star 2.5 magnitudes fainter).  The default 1 leaves every output byte
        for byte as without it; any other value is recorded in ``truth.json`` (``flux_scale``,
        and the scaled ``scene`` of each instrument).
    jitter_scale : float
        Pointing jitter rms of both instruments times this factor (>= 0; 0 = no jitter);
        recorded like ``flux_scale`` (``jitter_scale``, each instrument's ``jitter_rms_px``).

    Returns
    -------
    pathlib.Path
        The dataset root ``out``.

    Raises
    ------
    FileExistsError
        The planet exists and ``overwrite`` is false, or ``out`` is a non-empty non-dataset directory.
    DataLayoutError
        ``out`` holds other planets whose shared files (``axis_info.parquet``, ``adc_info.csv``,
        ``wavelengths.csv``) differ from this planet's (e.g. another ``n_pairs``), or one of its
        dataset CSVs is unreadable: nothing is written.

    Notes
    -----
    Everything is generated under ``out/.tmp-*`` and merged into the dataset at the end under
    an exclusive lock on ``out``: the planet's rows are added to ``train.csv`` and
    ``<split>_star_info.csv`` (the other planets' rows are kept), shared files are written only
    when absent, equal, or used by no other planet, every file is replaced atomically and the
    planet directory comes last, so an interrupted run never leaves a planet that looks complete
    and never damages the planets already there.
    """
    out = Path(out)
    planet_id = DEMO_PLANET_ID if planet_id is None else int(planet_id)
    counts = _resolve_n_pairs(full, n_pairs)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not 0 <= drop_pairs < min(counts.values()):
        raise ValueError(f"drop_pairs must be in [0, {min(counts.values())}), got {drop_pairs}")
    if not (math.isfinite(flux_scale) and flux_scale > 0):
        raise ValueError(f"flux_scale must be a finite number > 0, got {flux_scale}")
    if not (math.isfinite(jitter_scale) and jitter_scale >= 0):
        raise ValueError(f"jitter_scale must be a finite number >= 0, got {jitter_scale}")
    check_out_dir(out, overwrite, planet_id, split)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out))
    try:
        write_shared(tmp, counts)
        with dataset_lock(out):         # refuse a disagreeing dataset before minutes of simulation
            shared_file_plan(tmp, out, other_planets(out, split, planet_id))
        _generate(tmp, seed, planet_id, counts, drop_pairs, split, float(flux_scale), float(jitter_scale))
        move_into_place(tmp, out, planet_id, split, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def demo_path(seed: int = DEMO_SEED, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`ensure_demo` keeps the demo dataset of ``seed`` (nothing is generated)."""
    if cache_dir is None:
        cache_dir = os.environ.get("SPECTRAMIND_CACHE_DIR") or Path.home() / ".cache" / "spectramind"
    return Path(cache_dir) / f"demo-v{GENERATOR_VERSION}-seed{seed}"


def ensure_demo(seed: int = DEMO_SEED, cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the root of the default demo dataset for ``seed``, generating it once if needed.

    Parameters
    ----------
    seed : int
        Demo seed.
    cache_dir : str or os.PathLike, optional
        Where demo datasets are kept; default ``$SPECTRAMIND_CACHE_DIR`` or ``~/.cache/spectramind``.
        The dataset lives in ``<cache_dir>/demo-v<GENERATOR_VERSION>-seed<seed>``.
    """
    root = demo_path(seed, cache_dir)
    if (root / "train" / str(DEMO_PLANET_ID)).is_dir():
        return root
    # several processes may ask at once on a fresh machine (an app server, a calibration, the tests): the first
    # generates it, the others wait for it and use it (an exclusive lock on the cache directory)
    root.parent.mkdir(parents=True, exist_ok=True)
    with dataset_lock(root.parent):
        if not (root / "train" / str(DEMO_PLANET_ID)).is_dir():
            make_demo(root, seed=seed, overwrite=True)
    return root
