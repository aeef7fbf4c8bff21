r"""COREL: graph-smoothed per-bin sigma scales followed by split-conformal coverage.

Algorithm (``sigma' = c_g \, e^{s_b} \sigma`` for bin ``b`` in conformal group ``g``):

1. **Graph over the bins.**  Each bin is joined to its ``k_neighbors`` nearest
   bins in wavelength (symmetrised, weight 1).  With ``use_regions`` the
   detector layout is respected: k-NN edges never join FGS1 (bin 0) and AIRS,
   and every AIRS bin is also joined to all bins of its AIRS sub-region
   (``airs_regions`` contiguous wavelength blocks) with total weight
   ``region_weight`` per bin, a mild pull towards the region's common scale.
   ``L = D - W`` is the graph Laplacian.
2. **Smoothed scales.**  On the fitting planets, with ``z = (y - mu) / sigma``,
   ``n_b`` values and ``S_b = sum z^2`` per bin, minimise the Gaussian NLL of
   the scaled sigmas plus a Laplacian smoothness penalty

   .. math:: F(s) = \sum_b \left[n_b s_b + \tfrac12 S_b e^{-2 s_b}\right]
             + \lambda \, s^\top L s
             = \sum_b [\ldots] + \lambda \sum_{(i,j)} w_{ij} (s_i - s_j)^2

   (convex; L-BFGS-B with the analytic gradient
   ``n_b - S_b e^{-2 s_b} + 2 \lambda (L s)_b``, bounds from ``clamp``).
   ``lambda`` (``smoothness``) is measured in planets: a bin with few planets
   is dominated by its neighbours, one with many planets by its own data.
   With ``lambda = 0`` this is per-bin temperature scaling.
3. **Split-conformal coverage.**  On calibration planets held out from step 2
   (``conformal_fraction`` of the planets, seeded), the scores
   ``a = |z| e^{-s_b}`` of each group (one bin, one detector region, or all
   bins) give the finite-sample quantile ``q`` of rank ``ceil((n + 1) t)`` for
   the coverage target ``t``; the group's factor is ``c_g = q / q_N(t)`` with
   ``q_N(t)`` the two-sided Gaussian quantile, so ``mu +- q_N(t) sigma'``
   covers a fraction ``t``.  A group too small for that rank (``ceil((n+1) t)
   > n``) uses the next coarser level (bin -> region -> all bins).  With fewer
   than two planets, step 3 uses the fitting planets (in-sample; reported).
4. The total scale ``c_g e^{s_b}`` is clamped to ``clamp``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize

from .metrics import gaussian_quantile

__all__ = [
    "FGS1_WAVELENGTH_UM",
    "AIRS_RANGE_UM",
    "standard_wavelengths",
    "region_labels",
    "build_graph",
    "graph_laplacian",
    "fit_log_scales",
    "conformal_quantile",
    "conformal_factors",
    "split_planets",
    "fit_corel",
]

#: centre of the FGS1 broadband channel (bin 0)
FGS1_WAVELENGTH_UM = 0.7
#: first and last AIRS-CH0 bin of the 2025 ``wavelengths.csv`` (wl_2, wl_283)
AIRS_RANGE_UM = (1.951761, 3.895036)


def standard_wavelengths(n_bins: int = 283) -> np.ndarray:
    """Bin 0 = FGS1 at 0.7 um, bins 1.. evenly spaced over the AIRS range (an approximation of wavelengths.csv)."""
    return np.concatenate([[FGS1_WAVELENGTH_UM], np.linspace(*AIRS_RANGE_UM, n_bins - 1)])


def region_labels(wavelengths: np.ndarray, airs_regions: int) -> np.ndarray:
    """Detector region of each bin: 0 = FGS1 (bin 0), 1..``airs_regions`` = contiguous AIRS wavelength blocks."""
    labels = np.zeros(len(wavelengths), dtype=np.int64)
    airs = 1 + np.argsort(np.asarray(wavelengths)[1:], kind="stable")
    for region, block in enumerate(np.array_split(airs, min(airs_regions, len(airs))), start=1):
        labels[block] = region
    return labels


def build_graph(
    wavelengths: np.ndarray,
    k_neighbors: int,
    regions: np.ndarray | None = None,
    region_weight: float = 0.0,
) -> np.ndarray:
    """Symmetric weighted adjacency matrix of the bins.

    Parameters
    ----------
    wavelengths : ndarray, shape (n_bins,)
        Bin wavelengths (um).
    k_neighbors : int
        Nearest neighbours in wavelength joined to each bin (weight 1).
    regions : ndarray of int, optional
        Detector regions from :func:`region_labels`; when given, k-NN edges
        stay within a detector (FGS1 = region 0, AIRS = regions >= 1) and
        bins of the same region are joined with total weight ``region_weight``.
    region_weight : float
        Sum of the region-edge weights of one bin.

    Returns
    -------
    ndarray, shape (n_bins, n_bins)
    """
    wl = np.asarray(wavelengths, dtype=np.float64)
    n = wl.size
    dist = np.abs(wl[:, None] - wl[None, :])
    np.fill_diagonal(dist, np.inf)
    if regions is not None:
        detector = np.asarray(regions) > 0
        dist[detector[:, None] != detector[None, :]] = np.inf
    w = np.zeros((n, n))
    order = np.argsort(dist, axis=1, kind="stable")[:, :k_neighbors]
    rows = np.repeat(np.arange(n), order.shape[1])
    cols = order.ravel()
    reachable = np.isfinite(dist[rows, cols])
    w[rows[reachable], cols[reachable]] = 1.0
    w = np.maximum(w, w.T)
    if regions is not None and region_weight > 0:
        for region in np.unique(regions):
            members = np.flatnonzero(regions == region)
            if members.size > 1:
                block = np.ix_(members, members)
                w[block] += region_weight / (members.size - 1) * (1.0 - np.eye(members.size))
    return w


def graph_laplacian(adjacency: np.ndarray) -> np.ndarray:
    """``L = D - W`` (``s^T L s = sum over edges w_ij (s_i - s_j)^2``)."""
    return np.diag(adjacency.sum(axis=1)) - adjacency


def fit_log_scales(
    z: np.ndarray,
    laplacian: np.ndarray,
    smoothness: float,
    log_bounds: tuple[float, float],
    max_iter: int = 500,
) -> tuple[np.ndarray, dict]:
    """Per-bin log-scales minimising the Gaussian NLL plus ``smoothness * s^T L s``.

    Parameters
    ----------
    z : ndarray, shape (n_planets, n_bins)
        Standardised residuals of the fitting planets.
    laplacian : ndarray, shape (n_bins, n_bins)
        Graph Laplacian from :func:`graph_laplacian`.
    smoothness : float
        Penalty weight ``lambda`` (in planets).
    log_bounds : (float, float)
        Bounds of each ``s_b``.
    max_iter : int
        L-BFGS-B iteration limit.

    Returns
    -------
    s : ndarray, shape (n_bins,)
    info : dict
        ``converged``, ``iterations``, ``message``, ``objective`` (per value).
    """
    z = np.asarray(z, dtype=np.float64)
    n_b = np.full(z.shape[1], float(z.shape[0]))
    s_b = np.sum(z * z, axis=0)

    def objective(s: np.ndarray) -> tuple[float, np.ndarray]:
        e = np.exp(-2.0 * s)
        ls = laplacian @ s
        value = float(np.sum(n_b * s + 0.5 * s_b * e) + smoothness * s @ ls)
        return value, n_b - s_b * e + 2.0 * smoothness * ls

    start = np.clip(0.5 * math.log(max(s_b.sum() / n_b.sum(), 1e-300)), *log_bounds)
    result = minimize(objective, np.full(z.shape[1], start), jac=True, method="L-BFGS-B",
                      bounds=[log_bounds] * z.shape[1], options={"maxiter": max_iter})
    info = {"converged": bool(result.success), "iterations": int(result.nit),
            "message": str(result.message), "objective": float(result.fun) / max(z.size, 1)}
    return result.x, info


def conformal_quantile(scores: np.ndarray, level: float) -> float | None:
    """Split-conformal quantile: the ``ceil((n + 1) level)``-th smallest score, or None when that rank exceeds ``n``."""
    scores = np.ravel(scores)
    rank = math.ceil((scores.size + 1) * level - 1e-9)
    if rank > scores.size or rank < 1:
        return None
    return float(np.partition(scores, rank - 1)[rank - 1])


def conformal_factors(z: np.ndarray, level: float, mode: str, regions: np.ndarray) -> tuple[np.ndarray, dict]:
    """Per-bin conformal factors ``q / q_N(level)`` of held-out z-scores.

    Parameters
    ----------
    z : ndarray, shape (n_planets, n_bins)
        Held-out z-scores (already divided by the graph scales).
    level : float
        Coverage target in (0, 1).
    mode : {"per_bin", "group", "global"}
        Finest grouping; groups too small for the conformal rank fall back to
        the next coarser level.
    regions : ndarray of int, shape (n_bins,)
        Groups used by ``"group"`` (detector regions).

    Returns
    -------
    factors : ndarray, shape (n_bins,)
    info : dict
        ``bins_by_level``: how many bins use each level (``none`` = no level
        had enough values; factor 1).
    """
    a = np.abs(np.asarray(z, dtype=np.float64))
    n_bins = a.shape[1]
    q_gauss = gaussian_quantile(level)
    factors = np.ones(n_bins)
    level_used = np.full(n_bins, "none", dtype=object)
    groupings = {"global": np.zeros(n_bins, dtype=np.int64), "group": np.asarray(regions),
                 "per_bin": np.arange(n_bins)}
    chain = ("global", "group", "per_bin")
    for name in chain[: chain.index(mode) + 1]:
        labels = groupings[name]
        for label in np.unique(labels):
            members = labels == label
            q = conformal_quantile(a[:, members], level)
            if q is not None:
                factors[members] = q / q_gauss
                level_used[members] = name
    counts = {name: int(np.sum(level_used == name)) for name in (*chain, "none")}
    return factors, {"bins_by_level": counts}


def split_planets(n_planets: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of planet indices into ``(first, second)`` with ``round(fraction n)`` in the first.

    Both parts get at least one planet (``n_planets >= 2`` required).
    """
    if n_planets < 2:
        raise ValueError(f"cannot split {n_planets} planet(s) into two non-empty parts")
    perm = np.random.default_rng(seed).permutation(n_planets)
    n_first = min(max(round(fraction * n_planets), 1), n_planets - 1)
    return np.sort(perm[:n_first]), np.sort(perm[n_first:])


def fit_corel(
    z: np.ndarray,
    wavelengths: np.ndarray,
    *,
    k_neighbors: int = 4,
    use_regions: bool = True,
    airs_regions: int = 4,
    region_weight: float = 0.5,
    smoothness: float = 10.0,
    max_iter: int = 500,
    clamp: tuple[float, float] = (0.1, 10.0),
    coverage_target: float = 0.68,
    conformal: str = "group",
    conformal_fraction: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """Fit COREL per-bin sigma scales (see the module docstring for the algorithm).

    Parameters
    ----------
    z : ndarray, shape (n_planets, n_bins)
        Standardised residuals ``(y - mu) / sigma`` of the labelled planets.
    wavelengths : ndarray, shape (n_bins,)
        Bin wavelengths (um); bin 0 is FGS1.
    k_neighbors, use_regions, airs_regions, region_weight
        Graph construction (:func:`build_graph`).
    smoothness, max_iter
        Laplacian penalty weight and L-BFGS-B iteration limit.
    clamp : (float, float)
        Range of the final per-bin scale.
    coverage_target : float
        Conformal coverage target.
    conformal : {"per_bin", "group", "global", "none"}
        Conformal grouping; ``none`` skips step 3 and fits on all planets.
    conformal_fraction : float
        Fraction of the planets held out for the conformal step.
    seed : int
        Seed of the fit/conformal split.

    Returns
    -------
    scale : ndarray, shape (n_bins,)
        ``sigma' = scale * sigma``.
    details : dict
        ``graph_scale``, ``conformal_factor``, ``regions``, ``wavelengths_um``,
        ``n_edges``, ``n_fit``, ``n_conformal``, ``conformal_in_sample``,
        ``optimizer`` and the conformal ``bins_by_level``.
    """
    z = np.asarray(z, dtype=np.float64)
    n_planets = z.shape[0]
    regions = region_labels(wavelengths, airs_regions)
    adjacency = build_graph(wavelengths, k_neighbors, regions if use_regions else None,
                            region_weight if use_regions else 0.0)
    in_sample = conformal != "none" and n_planets < 2
    if conformal == "none" or in_sample:
        fit_idx = conf_idx = np.arange(n_planets)
    else:
        fit_idx, conf_idx = split_planets(n_planets, 1.0 - conformal_fraction, seed)
    log_bounds = (math.log(clamp[0]), math.log(clamp[1]))
    s, optimizer = fit_log_scales(z[fit_idx], graph_laplacian(adjacency), smoothness, log_bounds, max_iter)
    graph_scale = np.exp(s)
    details: dict = {
        "graph_scale": graph_scale.tolist(),
        "regions": regions.tolist(),
        "wavelengths_um": np.asarray(wavelengths, dtype=np.float64).tolist(),
        "n_edges": int(np.count_nonzero(np.triu(adjacency, 1))),
        "n_fit": int(fit_idx.size),
        "optimizer": optimizer,
    }
    if conformal == "none":
        factors = np.ones_like(graph_scale)
        details.update(n_conformal=0, conformal_in_sample=False)
    else:
        factors, conf_info = conformal_factors(z[conf_idx] / graph_scale, coverage_target, conformal, regions)
        details.update(n_conformal=int(conf_idx.size), conformal_in_sample=in_sample, **conf_info)
    details["conformal_factor"] = factors.tolist()
    return np.clip(graph_scale * factors, *clamp), details
