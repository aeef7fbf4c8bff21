"""Charge to raw reads: Poisson charge, kTC, cosmic rays, non-linearity, read noise, common mode, ADC;
the signal parquet written chunk by chunk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..io.layout import N_LINEAR_COEFFS
from .scene import sky_rate
from .settings import ADC_GAIN, ADC_OFFSET, DN_MAX, FIRST_READ_EXPTIME_S, KTC_RMS_E, InstrumentSim

__all__ = ["write_signal"]


def _horner(coeffs: np.ndarray, x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Evaluate ``sum_k coeffs[k] * x**k`` into ``out`` (Horner scheme, in place)."""
    np.multiply(coeffs[-1], x, out=out)
    for k in range(len(coeffs) - 2, 0, -1):
        out += coeffs[k]
        out *= x
    out += coeffs[0]
    return out


def _invert_nonlinearity(q: np.ndarray, coeffs: np.ndarray, tol: float = 1e-6, max_iter: int = 50) -> np.ndarray:
    """Solve ``sum_k coeffs[k] * x**k = q`` for x (e-) by vectorised Newton iterations.

    Parameters
    ----------
    q : numpy.ndarray
        (n, H, W) collected charge in e-.
    coeffs : numpy.ndarray
        (6, H, W) polynomial coefficients c0..c5 (monotonic over the range of ``q``).
    tol : float
        Convergence threshold on the largest Newton step, e-.
    max_iter : int
        Iteration limit.
    """
    deriv = coeffs[1:] * np.arange(1, N_LINEAR_COEFFS)[:, None, None]
    x = (q - coeffs[0]) / coeffs[1]
    p = np.empty_like(x)
    dp = np.empty_like(x)
    for _ in range(max_iter):
        _horner(coeffs, x, p)
        _horner(deriv, x, dp)
        p -= q
        p /= dp
        x -= p
        if np.abs(p).max() < tol:
            return x
    raise RuntimeError(f"non-linearity inversion did not converge in {max_iter} iterations")


def _to_dn(x: np.ndarray) -> np.ndarray:
    """Measured electrons -> uint16 DN: ``floor((x - offset) * gain)`` clipped to [0, 65535]."""
    return np.clip(np.floor((x - ADC_OFFSET) * ADC_GAIN), 0, DN_MAX).astype(np.uint16)


def _simulate_pairs(rng: np.random.Generator, sim: InstrumentSim, scene: dict, det: dict, sysm: dict,
                    transit: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Simulate the raw DN of read pairs ``pairs`` (consecutive indices); returns (2n, H, W) uint16."""
    n = pairs.size
    jit = sysm["jitter"][pairs]
    sky = sky_rate(sim.name, scene, jit[:, 0], jit[:, 1])
    sky *= (transit[pairs] * sysm["drift"][pairs])[:, None, :]
    rate = sky * det["flat_true"] + det["dark"]
    rate[:, det["dead"]] = 0.0

    q = np.empty((2 * n, *sim.shape))
    q[0::2] = rng.poisson(rate * FIRST_READ_EXPTIME_S)
    q[1::2] = q[0::2] + rng.poisson(rate * sim.cds_s)
    ktc = rng.normal(0.0, KTC_RMS_E, rate.shape)
    q[0::2] += ktc
    q[1::2] += ktc
    hits = [h for h in sysm["cosmic_rays"] if pairs[0] <= h["pair"] <= pairs[-1]]
    if hits:
        frame = np.array([h["frame"] for h in hits]) - 2 * pairs[0]
        np.add.at(q, (frame, [h["row"] for h in hits], [h["col"] for h in hits]), [h["electrons"] for h in hits])

    x = _invert_nonlinearity(q, det["linear_corr"])
    x += det["read"] * rng.standard_normal(x.shape)
    x += sysm["common_mode"][2 * pairs[0]:2 * pairs[-1] + 2][:, None, None]
    dn = _to_dn(x)
    dropped = sysm["dropped"][(sysm["dropped"] >= pairs[0]) & (sysm["dropped"] <= pairs[-1])] - pairs[0]
    dn[2 * dropped] = 0
    dn[2 * dropped + 1] = 0
    return dn


def _record_batch(dn: np.ndarray, schema: pa.Schema) -> pa.RecordBatch:
    """Wide record batch (one uint16 column per pixel) from (n, H, W) frames, via one column-major buffer."""
    n = dn.shape[0]
    column_major = pa.array(np.asfortranarray(dn.reshape(n, -1)).ravel(order="F"))
    return pa.RecordBatch.from_arrays([column_major.slice(j * n, n) for j in range(len(schema))], schema=schema)


def write_signal(path: Path, rng: np.random.Generator, sim: InstrumentSim, scene: dict, det: dict,
                  sysm: dict, transit: np.ndarray) -> None:
    """Simulate and write one signal parquet chunk by chunk (one row group per chunk of pairs)."""
    n_pairs = transit.shape[0]
    schema = pa.schema([pa.field(str(j), pa.uint16()) for j in range(sim.shape[0] * sim.shape[1])])
    with pq.ParquetWriter(path, schema, compression="snappy", write_statistics=False) as writer:
        for start in range(0, n_pairs, sim.chunk_pairs):
            pairs = np.arange(start, min(start + sim.chunk_pairs, n_pairs))
            dn = _simulate_pairs(rng, sim, scene, det, sysm, transit, pairs)
            writer.write_batch(_record_batch(dn, schema), row_group_size=dn.shape[0])
