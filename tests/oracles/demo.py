"""What a perfect calibration of a demo planet recovers: the oracle of the detector-stage and demo tests.

Nothing in the engine calls it.
"""

from __future__ import annotations

import os

import numpy as np

from calib_core.io.layout import INSTRUMENTS
from calib_core.sim.scene import sky_rate
from calib_core.sim.truth import load_truth


def expected_cds(root: str | os.PathLike, planet_id: int, instrument: str,
                 pair_indices: np.ndarray | list[int] | None = None) -> np.ndarray:
    """Noiseless CDS sky signal in electrons that a perfect calibration should recover.

    ``sky_rate(jitter_k) * dt_cds * transit_k * drift_k`` per pixel, with ``dt_cds`` 4.5 s
    (AIRS-CH0) / 0.1 s (FGS1): no flat, dark, non-linearity, common mode or noise.  Dead
    pixels carry the sky value they would see (the detector records nothing there).

    Parameters
    ----------
    root : str or os.PathLike
        Demo dataset root.
    planet_id : int
        Demo planet id.
    instrument : str
        ``"FGS1"`` or ``"AIRS-CH0"``.
    pair_indices : array-like of int, optional
        Pairs to compute (default all); pair ``k`` is frames ``2k`` and ``2k + 1``.

    Returns
    -------
    numpy.ndarray
        (n, H, W) float64 electrons.
    """
    if instrument not in INSTRUMENTS:
        raise ValueError(f"unknown instrument {instrument!r}; expected one of {INSTRUMENTS}")
    truth = load_truth(root, planet_id)
    meta = truth["instruments"][instrument]
    n_pairs = meta["n_pairs"]
    pairs = np.arange(n_pairs) if pair_indices is None else np.asarray(pair_indices, dtype=int)
    jitter = truth[f"{instrument}_jitter"][pairs]
    sky = sky_rate(instrument, meta["scene"], jitter[:, 0], jitter[:, 1])
    factor = truth[f"{instrument}_transit"][pairs] * truth[f"{instrument}_drift"][pairs]
    sky *= factor[:, None, :]
    return sky * meta["cds_s"]
