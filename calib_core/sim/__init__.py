"""The simulator: a synthetic Ariel planet in the exact 2025 Kaggle layout, with its ground truth.

:func:`make_demo` writes one planet (FGS1 and AIRS-CH0 raw reads, calibration
maps, ``axis_info.parquet``, CSV metadata) that :mod:`calib_core.io`
reads like real data, plus everything that was injected under
``<out>/truth/<planet_id>/``.  Magnitudes follow ``ariel_data.md`` section 4
and the recipe of section 7.

Forward model, per instrument and read pair ``k`` (all charges in electrons):

1. Scene: star rate map in e-/s (AIRS-CH0: column spectrum x spatial row
   profile; FGS1: separable Gaussian-mixture PSF), shifted by the pair's
   pointing jitter ``(dx, dy)`` (exact: every component is integrated over the
   pixels analytically), times the transit light curve of the pixel's
   wavelength bin and a slow multiplicative gain drift.  Transit and drift are
   evaluated at the axis time of the pair's second read.
2. Charge: ``rate = sky * flat_true + dark`` (dead pixels collect nothing);
   ``Q_first = kTC + Poisson(rate * 0.1 s)``,
   ``Q_second = Q_first + Poisson(rate * dt_cds) + cosmic rays`` with
   ``dt_cds`` = 4.5 s (AIRS-CH0) / 0.1 s (FGS1); kTC is a per-pixel,
   per-pair reset offset shared by both reads.
3. Non-linearity: the measured value ``x`` solves
   ``sum_k linear_corr[k] * x**k = Q`` (vectorised Newton).
4. Read noise ``N(0, read_map)`` per read, plus a per-read common-mode offset.
5. ADC: ``DN = floor((x + 1000) * 0.4369)`` clipped to ``[0, 65535]``.

Truth (``<out>/truth/<planet_id>/``): ``truth.json`` (seed, orbit, t0, T14, depths, limb darkening,
``flux_scale`` and ``jitter_scale`` when either is not 1 (absent = 1), scene parameters (star rates
already scaled), per-instrument settings, drift parameters, dropped pairs,
cosmic-ray hits with instrument/pair/frame/row/col/electrons, hot/dead counts) and, per
instrument, ``<inst>_{flat,dark,hot,dead,sky}.npy`` (H, W) maps (true flat, dark rate in
e-/s, masks, zero-jitter out-of-transit star rate in e-/s), ``<inst>_jitter.npy``
(n_pairs, 2) = (dx, dy) in pixels, ``<inst>_{drift,transit}.npy`` (n_pairs, W) for AIRS-CH0
and (n_pairs, 1) for FGS1, ``<inst>_common_mode.npy`` (n_frames,) in e- and
``<inst>_pair_time_s.npy`` (n_pairs,) (times at which transit and drift were evaluated).

Random streams: ``SeedSequence(seed)`` is spawned into independent streams for the planet,
and per instrument for the detector maps, the systematics and the pixel noise, so the
output is byte-identical for a given seed and pyarrow version.

A perfect calibration (ADC -> common mode -> linear_corr -> dark * exptime ->
CDS -> flat) therefore recovers ``expected_cds`` (the tests' oracle,
``tests/oracles/demo.py``) on good pixels up to
read, shot and quantisation noise.  The shipped ``flat``, ``dark``, ``read``
and ``linear_corr`` maps are the true ones (no measurement noise), except the
shipped flat of dead pixels, which is drawn in ``[-0.05, 0]`` as in the real
data (their true response is 0).

Modules: :mod:`.settings` (instrument settings, timing, wavelength grids),
:mod:`.scene` (the star on the detectors), :mod:`.transit` (the injected
planet and its light curves), :mod:`.detector` (true maps and systematics),
:mod:`.readout` (charge to raw reads, the signal files), :mod:`.writer` (the
other files of the layout), :mod:`.truth` (``truth.json`` and its arrays),
:mod:`.dataset` (adding a planet to a dataset root), :mod:`.demo`
(:func:`make_demo`, :func:`ensure_demo`) and :mod:`.noise_limit` (the
photon + read-noise limit of the depths from the truth).
"""

from .demo import ensure_demo, make_demo
from .settings import (DEFAULT_N_PAIRS, DEMO_PLANET_ID, DEMO_SEED, GENERATOR_VERSION, airs_column_targets,
                       airs_wavelengths, target_wavelengths)
from .truth import load_truth

__all__ = [
    "DEMO_PLANET_ID",
    "DEMO_SEED",
    "DEFAULT_N_PAIRS",
    "GENERATOR_VERSION",
    "airs_wavelengths",
    "target_wavelengths",
    "airs_column_targets",
    "make_demo",
    "ensure_demo",
    "load_truth",
]
