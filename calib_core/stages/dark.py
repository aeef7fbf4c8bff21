"""Dark stage: subtract the dark current of each read; find and repair hot pixels.

For every read ``i``: ``data_i -= rate * t_i * k_T`` where ``rate`` is the
dark-current map (e-/s; the calibration ``dark`` map for ``method: master``, or
a per-pixel map file for ``method: per_pixel_map``), ``t_i`` the read's
integration time since the reset (``exptime_s`` of the frame axis: AIRS
0.1 / 4.6 s, FGS1 0.1 / 0.2 s, the organisers' ``dt``) and ``k_T`` the optional
temperature factor (1 when the detector is at the map's reference temperature).

Hot (and cold) pixels are the outliers of the dark map under astropy
``sigma_clip`` (both tails, like the reference ``mask_hot_dead``); they are
flagged ``HOT`` and/or replaced in every frame by the median of their usable
8-neighbours (``REPAIRED``).  The variance is not changed by the subtraction
(the dark charge's Poisson variance is already part of the ADC variance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from astropy.stats import sigma_clip

from ..config.base import ConfigError, IOConfig, QualityChecks, StageConfig, opt
from ..dq import DQ, DQ_DTYPE
from ..frames import Frames, FrameSource, StoredOutput, StoreWriter
from ..kernels import FRAME_COUNTS, dark_frames
from .adc import resolve_conversion
from .common import (DqTally, copy_frame_meta, frame_image, input_read_var, map_label, preview_index,
                     report_bad_input, validate_map)
from .base import FrameStream, Gate, StageContext, StreamStage, gate, hist_data

__all__ = [
    "DarkConfig", "DarkQC", "PerPixelMapConfig", "ConvertUnitsConfig", "ExposureConfig", "TemperatureConfig",
    "HotPixelConfig",
    "hot_pixel_mask", "temperature_factor", "subtract_dark", "NeighbourTable", "neighbour_table",
    "neighbour_median",
    "DarkStage", "STAGE",
]

#: Boltzmann constant (eV/K)
K_BOLTZMANN_EV = 8.617333262e-5


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------


@dataclass
class ConvertUnitsConfig:
    enabled: bool = opt(False, doc="convert the per-pixel map from per_pixel_map.units to e-/s with the ADC gain")


@dataclass
class PerPixelMapConfig:
    path: str = opt("", doc="dark-rate map file (.npy or calibration-layout .parquet); empty = the planet's dark map")
    units: str = opt("e_per_s", choices=("e_per_s", "adu_per_s"), doc="units of the per-pixel map")
    convert_units: ConvertUnitsConfig = opt(ConvertUnitsConfig, doc="unit conversion of the map")

    def check(self, prefix: str) -> None:
        if self.units != "e_per_s" and not self.convert_units.enabled:
            raise ConfigError(f"{prefix}.convert_units.enabled", False,
                              f"must be true when {prefix}.units is '{self.units}' (the frames are in electrons)")


@dataclass
class ExposureConfig:
    scale: bool = opt(True, doc="multiply the dark rate by each read's integration time since reset; "
                                "false: subtract the map as a per-read charge (e-)")


@dataclass
class TemperatureConfig:
    enabled: bool = opt(False, doc="scale the dark map from ref_temp_k to detector_temp_k")
    method: str = opt("linear", choices=("linear", "arrhenius"),
                      doc="linear: 1 + slope_per_k (T - Tref); arrhenius: exp(-Ea/k (1/T - 1/Tref))")
    ref_temp_k: float = opt(293.15, gt=0, unit="K", doc="detector temperature at which the dark map was measured")
    detector_temp_k: Optional[float] = opt(None, nullable=True, gt=0, unit="K",
                                           doc="detector temperature of the visit; null = ref_temp_k (factor 1)")
    slope_per_k: float = opt(0.10, unit="1/K", doc="relative dark change per kelvin (method linear)")
    activation_energy_ev: float = opt(0.60, gt=0, unit="eV", doc="activation energy (method arrhenius)")

    def check(self, prefix: str) -> None:
        if self.enabled and self.method == "linear" and temperature_factor(self) <= 0:
            raise ConfigError(f"{prefix}.slope_per_k", self.slope_per_k,
                              "gives a non-positive dark scale factor at detector_temp_k")


@dataclass
class HotPixelConfig:
    enabled: bool = opt(True, doc="detect hot/cold pixels by sigma-clipping the dark map")
    sigma: float = opt(5.0, gt=0, doc="clip threshold (standard deviations, both tails)")
    maxiters: int = opt(5, ge=1, doc="sigma-clipping iterations")
    action: str = opt("flag_and_repair", choices=("flag", "repair", "flag_and_repair"),
                      doc="flag: HOT bit; repair: median of usable 8-neighbours per frame (REPAIRED); both")


@dataclass
class DarkQC(QualityChecks):
    max_hot_frac: float = opt(0.02, ge=0, le=1, doc="max fraction of hot/cold pixels in the dark map")
    min_residual_level_e: float = opt(-50.0, unit="e-",
                                      doc="min median (over first reads) of the frame-mean dark-corrected level")


@dataclass
class DarkConfig(StageConfig):
    io: IOConfig = opt(IOConfig(input_key="adc_corrected", output_key="dark_corrected"), doc="input/output keys")
    quality_checks: DarkQC = opt(DarkQC, doc="QC gates: hot-pixel fraction, residual level")
    method: str = opt("master", choices=("master", "per_pixel_map"),
                      doc="master: the calibration dark map (e-/s); per_pixel_map: the map under per_pixel_map")
    per_pixel_map: PerPixelMapConfig = opt(PerPixelMapConfig, doc="dark-rate map used by method per_pixel_map")
    exposure: ExposureConfig = opt(ExposureConfig, doc="exposure scaling")
    temperature: TemperatureConfig = opt(TemperatureConfig, doc="temperature scaling of the dark map")
    hot_pixels: HotPixelConfig = opt(HotPixelConfig, doc="hot/cold pixel detection and repair")


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------


def hot_pixel_mask(dark: np.ndarray, *, sigma: float = 5.0, maxiters: int = 5) -> np.ndarray:
    """Outliers of a dark map under iterative sigma clipping (both tails; non-finite values included).

    Parameters
    ----------
    dark : ndarray, shape (H, W)
        Dark-current map (e-/s).
    sigma : float
        Clip threshold in standard deviations about the median.
    maxiters : int
        Clipping iterations.

    Returns
    -------
    ndarray of bool, shape (H, W)
        True for hot/cold pixels (astropy ``sigma_clip(...).mask``).
    """
    clipped = sigma_clip(np.asarray(dark, np.float64), sigma=sigma, maxiters=maxiters, masked=True)
    return np.ma.getmaskarray(clipped).copy()


def temperature_factor(cfg: TemperatureConfig) -> float:
    """Dark scale factor for the detector temperature (1 when disabled or at the reference).

    Parameters
    ----------
    cfg : TemperatureConfig
        ``method``, ``ref_temp_k``, ``detector_temp_k``, ``slope_per_k`` (1/K),
        ``activation_energy_ev`` (eV).

    Returns
    -------
    float
        Linear: ``1 + slope (T - Tref)``; Arrhenius: ``exp(-Ea/k_B (1/T - 1/Tref))``.
    """
    if not cfg.enabled or cfg.detector_temp_k is None:
        return 1.0
    t, tref = float(cfg.detector_temp_k), float(cfg.ref_temp_k)
    if cfg.method == "linear":
        return 1.0 + cfg.slope_per_k * (t - tref)
    return math.exp(-cfg.activation_energy_ev / K_BOLTZMANN_EV * (1.0 / t - 1.0 / tref))


def subtract_dark(data: np.ndarray, dark: np.ndarray, exptime_s: np.ndarray | None) -> np.ndarray:
    """Subtract the dark charge of each read, in place.

    Parameters
    ----------
    data : ndarray of float32, shape (n, H, W)
        Reads (e-); modified in place and returned.
    dark : ndarray, shape (H, W)
        Dark rate (e-/s) when ``exptime_s`` is given, else dark charge per read (e-).
    exptime_s : ndarray, shape (n,), or None
        Integration time of each read since the reset (s).

    Returns
    -------
    ndarray of float32, shape (n, H, W)
        ``data - dark * exptime_s`` (or ``data - dark``).
    """
    d = np.asarray(dark, np.float32)
    if exptime_s is None:
        data -= d
    else:
        data -= d * np.asarray(exptime_s, np.float32)[:, None, None]
    return data


@dataclass
class NeighbourTable:
    """The 8-neighbours of a set of pixels to repair."""

    rows: np.ndarray        #: (k,) row of each pixel to repair
    cols: np.ndarray        #: (k,) column of each pixel to repair
    nbr_rows: np.ndarray    #: (k, 8) neighbour rows (clipped into the frame)
    nbr_cols: np.ndarray    #: (k, 8) neighbour columns (clipped into the frame)
    valid: np.ndarray       #: (k, 8) neighbour inside the frame and statically usable

    def __len__(self) -> int:
        return len(self.rows)


def neighbour_table(bad: np.ndarray, usable: np.ndarray) -> NeighbourTable:
    """Neighbour indices of every ``bad`` pixel, valid where inside the frame and ``usable``.

    Parameters
    ----------
    bad : ndarray of bool, shape (H, W)
        Pixels to repair.
    usable : ndarray of bool, shape (H, W)
        Pixels allowed as donors (e.g. neither hot nor dead).
    """
    h, w = bad.shape
    rows, cols = np.nonzero(bad)
    dr, dc = np.meshgrid([-1, 0, 1], [-1, 0, 1], indexing="ij")
    keep = (dr != 0) | (dc != 0)
    nr = rows[:, None] + dr[keep][None, :]
    nc = cols[:, None] + dc[keep][None, :]
    inside = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
    nr, nc = np.clip(nr, 0, h - 1), np.clip(nc, 0, w - 1)
    return NeighbourTable(rows, cols, nr, nc, inside & usable[nr, nc])


def neighbour_median(values: np.ndarray, table: NeighbourTable,
                     donors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Median of the valid neighbours of each table pixel in each frame.

    Parameters
    ----------
    values : ndarray, shape (n, H, W)
        Frames.
    table : NeighbourTable
        From :func:`neighbour_table`.
    donors : ndarray of bool, shape (n, k, 8), optional
        Per-frame usability of each neighbour (e.g. not flagged DO_NOT_USE in
        that frame), combined with ``table.valid``.

    Returns
    -------
    median : ndarray of float32, shape (n, k)
        Median of the valid neighbours (NaN where none is valid).
    count : ndarray of int, shape (n, k)
        Number of valid neighbours.
    """
    nbr = values[:, table.nbr_rows, table.nbr_cols].astype(np.float32)          # (n, k, 8)
    valid = np.broadcast_to(table.valid, nbr.shape)
    if donors is not None:
        valid = valid & donors
    valid = valid & np.isfinite(nbr)
    count = valid.sum(axis=-1)
    ordered = np.sort(np.where(valid, nbr, np.inf), axis=-1)
    lo = np.take_along_axis(ordered, np.maximum(count - 1, 0)[..., None] // 2, axis=-1)[..., 0]
    hi = np.take_along_axis(ordered, (count // 2)[..., None], axis=-1)[..., 0]
    median = np.where(count > 0, 0.5 * (lo + hi), np.nan).astype(np.float32)
    return median, count


# ---------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------


def _load_map_file(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return np.column_stack([table.column(i).to_numpy() for i in range(table.num_columns)])
    raise ValueError(f"calib.dark.per_pixel_map.path = {str(path)!r}: unsupported file type (use .npy or .parquet)")


class _DarkStream(FrameStream):
    """Dark subtraction and hot-pixel handling, chunk by chunk (the maps are prepared once)."""

    def __init__(self, inp: FrameSource, cfg: DarkConfig, ctx: StageContext):
        inst = ctx.instrument
        cal = ctx.planet.calibration(inst)
        shape = inp.frame_shape
        dark, self.source, self.units = DarkStage._dark_map(cfg, ctx, cal, shape)
        self.t_factor = temperature_factor(cfg.temperature)
        self.dark = (dark * self.t_factor).astype(np.float32)
        self.dead = validate_map(cal.dead, label=map_label(cal, inst, "dead"), frame_shape=shape,
                                 check_shape=cfg.validation.check_shape_compatibility,
                                 require_finite=False).astype(bool)
        self.hot = hot_pixel_mask(self.dark, sigma=cfg.hot_pixels.sigma, maxiters=cfg.hot_pixels.maxiters) \
            if cfg.hot_pixels.enabled else np.zeros(shape, bool)
        self.flag_hot = cfg.hot_pixels.action in ("flag", "flag_and_repair")
        self.repair = cfg.hot_pixels.enabled and cfg.hot_pixels.action in ("repair", "flag_and_repair")
        self.table = neighbour_table(self.hot, ~self.hot & ~self.dead)
        w = shape[1]
        self.dark_px = np.ascontiguousarray(self.dark.reshape(-1))
        self.hot_bits = (self.hot.reshape(-1) & self.flag_hot).astype(DQ_DTYPE) * DQ_DTYPE(DQ.HOT)
        k = len(self.table) if self.repair else 0        # pixels the kernel repairs
        table = self.table
        self.repair_args = (np.ascontiguousarray(table.rows[:k] * w + table.cols[:k], np.int64),
                            np.ascontiguousarray(table.nbr_rows[:k] * w + table.nbr_cols[:k], np.int64),
                            np.ascontiguousarray(table.valid[:k]))
        self.read_var, self.read_var_source = input_read_var(inp, cal, inst)
        self.cfg, self.inp = cfg, inp
        self.n_frames, self.frame_shape, self.axis = inp.n_frames, shape, inp.axis
        self.wavelength_um = inp.output.meta.get("wavelength_um")
        self.tally = DqTally()
        self.first_read_levels: list[np.ndarray] = []
        self.n_nonfinite = self.n_bad_input = self.n_unrepaired = 0

    def process(self, chunk: Frames) -> Frames:
        cfg = self.cfg
        n = len(chunk)
        data, var, dq = (np.ascontiguousarray(a) for a in (chunk.data, chunk.var, chunk.dq))
        counts = np.zeros(len(FRAME_COUNTS), np.int64)
        first_read = np.asarray(chunk.axis.read_kind) == 0
        means = np.empty(n)
        exptime = np.asarray(chunk.axis.exptime_s, np.float32) if cfg.exposure.scale else np.empty(0, np.float32)
        dark_frames(data.reshape(n, -1), var.reshape(n, -1), dq.reshape(n, -1), chunk.start, self.dark_px, exptime,
                    self.hot_bits, *self.repair_args, first_read, means, counts, self.tally.hist)
        self.n_bad_input += report_bad_input(*counts[:2], stage="dark", key=cfg.io.input_key,
                                            require=cfg.validation.require_finite_inputs)
        self.n_nonfinite += int(counts[FRAME_COUNTS.index("n_nonfinite")])
        self.n_unrepaired += int(counts[FRAME_COUNTS.index("n_unrepaired")])
        self.first_read_levels.append(means[first_read])
        return Frames(data, var, dq, chunk.axis, chunk.start)

    def finish(self, writer: StoreWriter) -> dict:
        cfg, dark, hot, dead = self.cfg, self.dark, self.hot, self.dead
        copy_frame_meta(self.inp, writer)
        writer.put("dark_applied", dark, "electron / s" if cfg.exposure.scale else "electron")
        writer.put("hot_mask", hot.astype(np.uint8), "bool")
        writer.put("read_var", self.read_var, "electron2")
        levels = np.concatenate(self.first_read_levels) if self.first_read_levels else np.array([])
        good = ~hot & ~dead & np.isfinite(dark)
        median_dark = float(np.median(dark[good])) if good.any() else float("nan")
        n_hot = int(hot.sum())
        n = self.n_frames
        return {
            "n_frames_in": n, "n_frames_out": n, "n_nonfinite": self.n_nonfinite, "dq_counts": self.tally.counts(),
            "n_nonfinite_input": self.n_bad_input,
            "dark_source": self.source, "dark_units": self.units, "temperature_factor": self.t_factor,
            "exposure_scaled": cfg.exposure.scale,
            "dark_median": median_dark,
            "n_hot": n_hot, "hot_frac": n_hot / hot.size,
            "n_hot_high": int((hot & (dark > median_dark)).sum()),
            "n_hot_low": int((hot & ~(dark > median_dark)).sum()),
            "hot_action": cfg.hot_pixels.action if cfg.hot_pixels.enabled else "none",
            "n_repaired_pixels": len(self.table) if self.repair else 0,
            "n_unrepaired_pixel_frames": self.n_unrepaired,
            "residual_level_e": float(np.median(levels[np.isfinite(levels)])) if np.isfinite(levels).any()
            else float("nan"),
            "read_var_source": self.read_var_source,
        }


class DarkStage(StreamStage):
    """Dark subtraction with hot-pixel flagging/repair (see the module docstring)."""

    name = "dark"
    title = "Dark current"
    Config = DarkConfig
    input_kind = "frames"
    output_kind = "frames"
    default_io = ("adc_corrected", "dark_corrected")

    def stream(self, inp: FrameSource, cfg: DarkConfig, ctx: StageContext) -> "_DarkStream":
        return _DarkStream(inp, cfg, ctx)

    @staticmethod
    def _dark_map(cfg: DarkConfig, ctx: StageContext, cal: Any, shape: tuple[int, int]) -> tuple[np.ndarray, str, str]:
        """The dark map in e-/s (or e- per read), its source and its original units."""
        inst = ctx.instrument
        val = cfg.validation
        if cfg.method == "master" or not cfg.per_pixel_map.path:
            label = map_label(cal, inst, "dark")
            raw = cal.dark
        else:
            path = Path(cfg.per_pixel_map.path).expanduser()
            if val.require_existing_paths and not path.is_file():
                raise FileNotFoundError(f"calib.dark.per_pixel_map.path = {str(path)!r}: no such file")
            label = f"calib.dark.per_pixel_map.path ({path})"
            raw = _load_map_file(path)
        dark = validate_map(raw, label=label, frame_shape=shape, check_shape=val.check_shape_compatibility,
                            require_finite=val.require_finite_inputs).astype(np.float64)
        units = "e_per_s"
        if cfg.method == "per_pixel_map":
            units = cfg.per_pixel_map.units
            if cfg.per_pixel_map.convert_units.enabled and units == "adu_per_s":
                adc_cfg = ctx.stage_cfgs.get("adc")
                gain, _, _ = resolve_conversion(adc_cfg.conversion if adc_cfg is not None else None, ctx.planet, inst)
                dark = dark / gain
        return dark, label, units

    def gates(self, metrics: dict, cfg: DarkConfig) -> list[Gate]:
        qc = cfg.quality_checks
        return [
            gate("hot_pixel_fraction", metrics["hot_frac"], "<=", qc.max_hot_frac,
                 "fraction of hot/cold pixels in the dark map"),
            gate("residual_level", metrics["residual_level_e"], ">=", qc.min_residual_level_e,
                 "median frame-mean level of dark-corrected first reads (negative flood = over-subtraction)"),
        ]

    def diagnostics(self, output: StoredOutput, metrics: dict, ctx: StageContext) -> list[dict]:
        dark = np.asarray(output.fields["dark_applied"])
        hot = np.asarray(output.fields["hot_mask"]).astype(bool)
        unit = "e-/s" if metrics.get("exposure_scaled", True) else "e-"
        plots = [
            {"kind": "image", "title": f"Dark map applied ({unit})", "data": dark, "xlabel": "detector column",
             "ylabel": "detector row", "clabel": unit},
            {"kind": "image", "title": f"Hot/cold pixels ({int(hot.sum())})", "data": hot.astype(np.uint8),
             "xlabel": "detector column", "ylabel": "detector row", "clabel": "flagged"},
            hist_data(dark.ravel(), bins=128, title="Dark map values", xlabel=unit),
        ]
        kinds = np.asarray(output.meta.get("frame_read_kind", []))
        index = preview_index(kinds, len(kinds))
        plots.append(frame_image(output, index, title="Dark-corrected electrons (signal read)"))
        keys = ("dark_source", "dark_units", "temperature_factor", "dark_median", "n_hot", "n_hot_high",
                "n_hot_low", "hot_action", "n_repaired_pixels", "n_unrepaired_pixel_frames", "residual_level_e")
        plots.append({"kind": "table", "title": "Dark summary", "rows": [[k, metrics.get(k)] for k in keys]})
        return plots


STAGE = DarkStage()
