"""Flat stage: divide by the pixel response (flat field), flag dead and unusable-flat pixels.

The flat actually applied is built once per run from the calibration ``flat``:

1. pixels with a non-finite flat or ``flat <= min_flat`` are ``BAD_FLAT`` and get
   a flat of 1 (their data are left unscaled and must not be used);
2. optional illumination correction: a smooth robust fit of the flat's
   large-scale structure (a low-order 2-D Legendre polynomial, or a cubic
   B-spline along each detector row) is divided out, so the flat keeps only the
   pixel-to-pixel response; the fitted field is stored and plotted;
3. optional renormalisation to mean 1 over the good pixels (neither dead nor
   bad-flat).

Frames: ``data /= flat``, ``var /= flat**2`` (and the per-read read-noise
variance ``read_var /= flat**2``); dead pixels (calibration ``dead``) are
flagged ``DEAD``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.interpolate import BSpline

from ..config.base import ConfigError, IOConfig, QualityChecks, StageConfig, opt
from ..dq import DQ, DQ_DTYPE
from ..frames import Frames, FrameSource, StoredOutput, StoreWriter
from ..kernels import FRAME_COUNTS, flat_frames
from .common import (MAD_TO_SIGMA, DqTally, copy_frame_meta, frame_image, input_read_var, map_label, preview_index,
                     report_bad_input, validate_map)
from .base import FrameStream, Gate, StageContext, StreamStage, gate, hist_data

__all__ = [
    "FlatConfig", "FlatQC", "DeadPixelConfig", "IlluminationConfig",
    "PreparedFlat", "prepare_flat", "fit_illumination_poly2d", "fit_illumination_row_spline", "apply_flat",
    "FlatStage", "STAGE",
]


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------


@dataclass
class DeadPixelConfig:
    flag: bool = opt(True, doc="flag the calibration dead map's pixels DEAD in every frame")


@dataclass
class IlluminationConfig:
    enabled: bool = opt(False, doc="divide a smooth fit of the flat's large-scale structure out of the flat")
    method: str = opt("poly2d", choices=("poly2d", "row_spline"),
                      doc="poly2d: 2-D Legendre polynomial; row_spline: cubic B-spline along each detector row")
    degree_x: int = opt(3, ge=0, le=10, doc="poly2d degree along detector columns")
    degree_y: int = opt(2, ge=0, le=10, doc="poly2d degree along detector rows")
    knots: int = opt(6, ge=1, le=64, doc="row_spline interior knots per row (uniform)")
    sigma: float = opt(3.0, gt=0, doc="robust fit: pixels beyond sigma x MAD-sigma of the residual are rejected")
    maxiters: int = opt(5, ge=1, doc="robust fit: rejection iterations")


@dataclass
class FlatQC(QualityChecks):
    flat_mean_range: list[float] = opt([0.8, 1.2], doc="allowed mean of the calibration flat over good pixels")
    max_zero_frac: float = opt(0.02, le=1,
                               doc="max fraction of pixels whose flat is zero/unusable (<= min_flat); < 0 always fails")
    max_data_zero_frac: float = opt(0.01, ge=0, le=1, doc="max fraction of pixel-frames at the ADC floor")
    max_data_saturated_frac: float = opt(0.01, ge=0, le=1, doc="max fraction of pixel-frames flagged SATURATED")

    def check(self, prefix: str) -> None:
        r = self.flat_mean_range
        if len(r) != 2 or not r[0] < r[1]:
            raise ConfigError(f"{prefix}.flat_mean_range", list(r), "must be [low, high] with low < high")


@dataclass
class FlatConfig(StageConfig):
    io: IOConfig = opt(IOConfig(input_key="dark_corrected", output_key="flat_corrected"), doc="input/output keys")
    quality_checks: FlatQC = opt(FlatQC, doc="QC gates: flat statistics, data zero/saturation pile-ups")
    renormalize_to_mean_one: bool = opt(False, doc="divide the flat by its mean over good pixels (the dataset's flat "
                                                   "is an absolute response, median ~1.01; the reference does not)")
    min_flat: float = opt(0.5, ge=0, doc="flat values <= this (or non-finite) are BAD_FLAT and not applied")
    dead_pixels: DeadPixelConfig = opt(DeadPixelConfig, doc="dead-pixel flags")
    illumination_correction: IlluminationConfig = opt(IlluminationConfig, doc="large-scale illumination removal")


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------


def _robust_keep(residual: np.ndarray, fit_mask: np.ndarray, sigma: float, axis: Any = None) -> np.ndarray:
    """Pixels of ``fit_mask`` whose residual is within ``sigma`` MAD-sigmas (per ``axis`` slice)."""
    r = np.where(fit_mask, np.abs(residual), np.nan)
    scale = MAD_TO_SIGMA * np.nanmedian(r, axis=axis, keepdims=axis is not None)
    return fit_mask & (np.abs(residual) <= sigma * np.maximum(scale, np.finfo(np.float64).tiny))


def fit_illumination_poly2d(flat: np.ndarray, good: np.ndarray, *, degree_x: int = 3, degree_y: int = 2,
                            sigma: float = 3.0, maxiters: int = 5) -> np.ndarray:
    """Robust least-squares 2-D Legendre polynomial of a flat's large-scale structure.

    Parameters
    ----------
    flat : ndarray, shape (H, W)
        Flat field (dimensionless).
    good : ndarray of bool, shape (H, W)
        Pixels allowed in the fit.
    degree_x, degree_y : int
        Degrees along columns and rows (tensor-product terms).
    sigma : float
        Rejection threshold in MAD-sigmas of the residual.
    maxiters : int
        Rejection iterations.

    Returns
    -------
    ndarray of float64, shape (H, W)
        The fitted field, normalised to mean 1 over ``good``.
    """
    h, w = flat.shape
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    basis = np.polynomial.legendre.legvander2d(y.ravel(), x.ravel(), [degree_y, degree_x])
    values = np.asarray(flat, np.float64).ravel()
    use = np.asarray(good, bool).ravel() & np.isfinite(values)
    model = np.ones_like(values)
    for _ in range(maxiters):
        coef, *_ = np.linalg.lstsq(basis[use], values[use], rcond=None)
        model = basis @ coef
        keep = _robust_keep(values - model, use, sigma)
        if np.array_equal(keep, use):
            break
        use = keep
    field = model.reshape(h, w)
    return field / field[good].mean()


def fit_illumination_row_spline(flat: np.ndarray, good: np.ndarray, *, knots: int = 6, sigma: float = 3.0,
                                maxiters: int = 5) -> np.ndarray:
    """Robust cubic B-spline along each detector row (all rows solved at once).

    Parameters
    ----------
    flat : ndarray, shape (H, W)
        Flat field (dimensionless).
    good : ndarray of bool, shape (H, W)
        Pixels allowed in the fit.
    knots : int
        Uniform interior knots per row.
    sigma, maxiters
        Robust rejection (per row) as in :func:`fit_illumination_poly2d`.

    Returns
    -------
    ndarray of float64, shape (H, W)
        The fitted field, normalised to mean 1 over ``good``.
    """
    h, w = flat.shape
    k = 3
    x = np.arange(w, dtype=np.float64)
    inner = np.linspace(0, w - 1, knots + 2)[1:-1]
    t = np.concatenate([np.full(k + 1, 0.0), inner, np.full(k + 1, w - 1.0)])
    basis = BSpline.design_matrix(x, t, k).toarray()                         # (W, nb)
    values = np.asarray(flat, np.float64)
    use = np.asarray(good, bool) & np.isfinite(values)
    y = np.where(use, values, 0.0)
    ridge = 1e-9 * np.eye(basis.shape[1])
    model = np.ones_like(values)
    for _ in range(maxiters):
        wts = use.astype(np.float64)
        gram = np.einsum("wi,rw,wj->rij", basis, wts, basis) + ridge
        rhs = np.einsum("wi,rw->ri", basis, wts * y)
        coef = np.linalg.solve(gram, rhs[..., None])[..., 0]                 # (H, nb)
        model = coef @ basis.T
        keep = _robust_keep(values - model, use, sigma, axis=1)
        if np.array_equal(keep, use):
            break
        use = keep
    return model / model[good].mean()


@dataclass
class PreparedFlat:
    """The flat applied to the frames and how it was built."""

    applied: np.ndarray              #: (H, W) float32, 1 on BAD_FLAT pixels
    bad: np.ndarray                  #: (H, W) bool, BAD_FLAT
    good: np.ndarray                 #: (H, W) bool, used for statistics (not dead, not bad)
    illumination: np.ndarray | None  #: (H, W) float32 field divided out, or None
    norm: float                      #: mean divided out by the renormalisation (1 when off)


def prepare_flat(flat: np.ndarray, dead: np.ndarray, *, min_flat: float, renormalize: bool,
                 illumination: IlluminationConfig | None = None) -> PreparedFlat:
    """Build the flat to apply (see the module docstring).

    Parameters
    ----------
    flat : ndarray, shape (H, W)
        Calibration flat (dimensionless).
    dead : ndarray of bool, shape (H, W)
        Dead pixels (excluded from fits and the mean).
    min_flat : float
        Values ``<= min_flat`` (or non-finite) are unusable.
    renormalize : bool
        Divide by the mean over good pixels.
    illumination : IlluminationConfig, optional
        When given and enabled, fit and divide out the large-scale field.
    """
    values = np.asarray(flat, np.float64)
    bad = ~np.isfinite(values) | (values <= min_flat)
    good = ~bad & ~np.asarray(dead, bool)
    if not good.any():
        raise ValueError(f"flat: no usable pixel (all flat values <= min_flat = {min_flat:g} or dead)")
    work = np.where(bad, 1.0, values)
    field = None
    if illumination is not None and illumination.enabled:
        if illumination.method == "poly2d":
            field = fit_illumination_poly2d(work, good, degree_x=illumination.degree_x,
                                            degree_y=illumination.degree_y, sigma=illumination.sigma,
                                            maxiters=illumination.maxiters)
        else:
            field = fit_illumination_row_spline(work, good, knots=illumination.knots, sigma=illumination.sigma,
                                                maxiters=illumination.maxiters)
        work = np.where(bad, 1.0, work / field)
    norm = float(work[good].mean()) if renormalize else 1.0
    applied = np.where(bad, 1.0, work / norm).astype(np.float32)
    return PreparedFlat(applied, bad, good, None if field is None else field.astype(np.float32), norm)


def _inverse(flat: np.ndarray) -> np.ndarray:
    """``1 / flat`` computed in float64, as float32 (the factor every frame is multiplied by)."""
    return (1.0 / np.asarray(flat, np.float64)).astype(np.float32)


def apply_flat(data: np.ndarray, var: np.ndarray, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Divide frames by the flat and variances by its square, in place.

    Parameters
    ----------
    data, var : ndarray of float32, shape (n, H, W)
        Electrons and variance (e-^2); modified in place.
    flat : ndarray of float32, shape (H, W)
        Flat to apply (no zeros: see :func:`prepare_flat`).

    Returns
    -------
    tuple of ndarray
        ``(data / flat, var / flat**2)``.
    """
    inv = _inverse(flat)
    data *= inv
    var *= inv * inv
    return data, var


# ---------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------


class _FlatStream(FrameStream):
    """Flat division and dead / bad-flat flags, chunk by chunk (the flat is prepared once)."""

    def __init__(self, inp: FrameSource, cfg: FlatConfig, ctx: StageContext):
        inst = ctx.instrument
        cal = ctx.planet.calibration(inst)
        shape = inp.frame_shape
        val = cfg.validation
        self.flat = validate_map(cal.flat, label=map_label(cal, inst, "flat"), frame_shape=shape,
                                 check_shape=val.check_shape_compatibility, require_finite=False)
        self.dead = validate_map(cal.dead, label=map_label(cal, inst, "dead"), frame_shape=shape,
                                 check_shape=val.check_shape_compatibility, require_finite=False).astype(bool)
        self.prep = prepare_flat(self.flat, self.dead, min_flat=cfg.min_flat, renormalize=cfg.renormalize_to_mean_one,
                                 illumination=cfg.illumination_correction)
        self.static = self.prep.bad.astype(DQ_DTYPE) * DQ_DTYPE(DQ.BAD_FLAT)
        if cfg.dead_pixels.flag:
            self.static |= self.dead.astype(DQ_DTYPE) * DQ_DTYPE(DQ.DEAD)
        read_var, self.read_var_source = input_read_var(inp, cal, inst)
        self.read_var = read_var / np.square(self.prep.applied)
        self.inv = _inverse(self.prep.applied).reshape(-1)
        self.inv2 = self.inv * self.inv
        self.static_px = self.static.reshape(-1).copy()
        self.cfg, self.inp = cfg, inp
        self.n_frames, self.frame_shape, self.axis = inp.n_frames, shape, inp.axis
        self.wavelength_um = inp.output.meta.get("wavelength_um")
        self.tally = DqTally()
        self.n_nonfinite = self.n_bad_input = 0

    def process(self, chunk: Frames) -> Frames:
        n = len(chunk)
        data, var, dq = (np.ascontiguousarray(a) for a in (chunk.data, chunk.var, chunk.dq))
        counts = np.zeros(len(FRAME_COUNTS), np.int64)
        flat_frames(data.reshape(n, -1), var.reshape(n, -1), dq.reshape(n, -1), chunk.start, self.inv, self.inv2,
                    self.static_px, counts, self.tally.hist)
        self.n_bad_input += report_bad_input(*counts[:2], stage="flat", key=self.cfg.io.input_key,
                                            require=self.cfg.validation.require_finite_inputs)
        self.n_nonfinite += int(counts[FRAME_COUNTS.index("n_nonfinite")])
        return Frames(data, var, dq, chunk.axis, chunk.start)

    def finish(self, writer: StoreWriter) -> dict:
        prep = self.prep
        copy_frame_meta(self.inp, writer)
        writer.put("flat_applied", prep.applied, "")
        writer.put("read_var", self.read_var, "electron2")
        if prep.illumination is not None:
            writer.put("illumination_field", prep.illumination, "")
        return FlatStage._metrics(self.n_frames, self.flat, self.dead, prep, self.tally, self.n_nonfinite,
                                  self.n_bad_input, self.read_var_source)


class FlatStage(StreamStage):
    """Flat-field division with dead / bad-flat flags (see the module docstring)."""

    name = "flat"
    title = "Flat field"
    Config = FlatConfig
    input_kind = "frames"
    output_kind = "frames"
    default_io = ("dark_corrected", "flat_corrected")

    def stream(self, inp: FrameSource, cfg: FlatConfig, ctx: StageContext) -> "_FlatStream":
        return _FlatStream(inp, cfg, ctx)

    @staticmethod
    def _metrics(n: int, flat: np.ndarray, dead: np.ndarray, prep: PreparedFlat, tally: DqTally,
                 n_nonfinite: int, n_bad_input: int, read_var_source: str) -> dict:
        counts = tally.counts()
        live = max(int(tally.hist.sum()) - int(tally.hist[DQ.DROPPED]), 1)
        raw_good = np.asarray(flat, np.float64)[prep.good]
        m: dict[str, Any] = {
            "n_frames_in": n, "n_frames_out": n, "n_nonfinite": n_nonfinite, "dq_counts": counts,
            "n_nonfinite_input": n_bad_input,
            "flat_mean": float(raw_good.mean()), "flat_std": float(raw_good.std()),
            "flat_min": float(raw_good.min()), "flat_max": float(raw_good.max()),
            "renorm_factor": prep.norm,
            "n_bad_flat": int(prep.bad.sum()), "flat_zero_frac": float(prep.bad.mean()),
            "n_dead": int(dead.sum()),
            "data_zero_frac": counts["ADC_FLOOR"] / live,
            "data_saturated_frac": counts["SATURATED"] / live,
            "read_var_source": read_var_source,
        }
        if prep.illumination is not None:
            m["illumination_min"] = float(prep.illumination[prep.good].min())
            m["illumination_max"] = float(prep.illumination[prep.good].max())
        return m

    def gates(self, metrics: dict, cfg: FlatConfig) -> list[Gate]:
        qc = cfg.quality_checks
        lo, hi = qc.flat_mean_range
        return [
            gate("flat_mean_low", metrics["flat_mean"], ">=", lo, "mean of the calibration flat over good pixels"),
            gate("flat_mean_high", metrics["flat_mean"], "<=", hi, "mean of the calibration flat over good pixels"),
            gate("flat_zero_fraction", metrics["flat_zero_frac"], "<=", qc.max_zero_frac,
                 "fraction of pixels whose flat is unusable (<= min_flat)"),
            gate("data_zero_pileup", metrics["data_zero_frac"], "<=", qc.max_data_zero_frac,
                 "fraction of pixel-frames at the ADC floor"),
            gate("data_saturation_pileup", metrics["data_saturated_frac"], "<=", qc.max_data_saturated_frac,
                 "fraction of pixel-frames flagged SATURATED"),
        ]

    def diagnostics(self, output: StoredOutput, metrics: dict, ctx: StageContext) -> list[dict]:
        applied = np.asarray(output.fields["flat_applied"])
        plots = [
            {"kind": "image", "title": "Flat applied (pixel response)", "data": applied,
             "xlabel": "detector column", "ylabel": "detector row", "clabel": "relative response"},
            hist_data(applied.ravel(), bins=128, title="Flat applied", xlabel="relative response"),
        ]
        if "illumination_field" in output.fields:
            plots.append({"kind": "image", "title": "Illumination field removed from the flat",
                          "data": np.asarray(output.fields["illumination_field"]), "xlabel": "detector column",
                          "ylabel": "detector row", "clabel": "relative illumination"})
        kinds = np.asarray(output.meta.get("frame_read_kind", []))
        index = preview_index(kinds, len(kinds))
        plots.append(frame_image(output, index, title="Flat-corrected electrons (signal read)"))
        keys = ("flat_mean", "flat_std", "flat_min", "flat_max", "renorm_factor", "n_bad_flat", "n_dead",
                "data_zero_frac", "data_saturated_frac", "illumination_min", "illumination_max")
        plots.append({"kind": "table", "title": "Flat summary",
                      "rows": [[k, metrics[k]] for k in keys if k in metrics]})
        return plots


STAGE = FlatStage()
