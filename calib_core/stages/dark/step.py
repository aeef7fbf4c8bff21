"""The dark stage: a thin adapter over :mod:`.subtract` (the compiled pass), :mod:`.hot_pixels` and :mod:`.repair`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...diagnostics import Image, Plot, Table, frame_image, histogram
from ...dq import DQ, DQ_DTYPE
from ...frames import Frames, FrameSource, copy_frame_meta
from ...store import StoredOutput, StoreWriter
from ..adc.conversion import resolve_conversion
from ..base import FrameStream, Gate, StageContext, StreamStage, gate
from ..errors import DataError
from ..maps import input_read_var, map_label, validate_map
from ..pixels import FRAME_COUNTS, DqTally, report_bad_input
from ..streaming import preview_index
from . import INFO
from .config import DarkConfig
from .hot_pixels import hot_pixel_mask
from .repair import neighbour_table
from .subtract import dark_frames
from .temperature import temperature_factor

__all__ = ["DarkStage", "STAGE"]


def _load_map_file(path: Path, instrument: str) -> np.ndarray:
    """The map in ``path`` for ``instrument``; a file that does not parse is named, its content never shown.

    ``.npy`` and calibration-layout ``.parquet`` hold one map (both instruments then read it, so it must fit
    both or broadcast); ``.npz`` holds one array per instrument, named ``FGS1`` and ``AIRS-CH0``.
    """
    key = f"calib.dark.per_pixel_map.path = {str(path)!r}"
    if path.suffix not in (".npy", ".npz", ".parquet"):
        raise DataError(f"{key}: unsupported file type (use .npy, .npz with one array per instrument, or .parquet)")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as maps:
                if instrument not in maps.files:
                    raise DataError(f"{key}: no array named {instrument!r} (it holds {sorted(maps.files)}; "
                                    "an .npz map holds one array per instrument)")
                return maps[instrument]
        from ...io.parquet_frames import read_parquet

        table = read_parquet(path)
        return np.column_stack([table.column(i).to_numpy() for i in range(table.num_columns)])
    except DataError:
        raise
    except (OSError, ValueError, EOFError, ArithmeticError, TypeError, KeyError) as exc:
        # the library's message may quote the file's bytes: say only what kind of failure it was
        raise DataError(f"{key}: not a readable {path.suffix[1:]} map ({type(exc).__name__})") from None


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

    info = INFO
    Config = DarkConfig

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
            raw = _load_map_file(path, inst)
        dark = validate_map(raw, label=label, frame_shape=shape, check_shape=val.check_shape_compatibility,
                            require_finite=val.require_finite_inputs).astype(np.float64)
        units = "e_per_s"
        if cfg.method == "per_pixel_map":
            units = cfg.per_pixel_map.units
            if cfg.per_pixel_map.convert_units.enabled and units == "adu_per_s":
                gain, _, _ = resolve_conversion(ctx.config("adc.conversion"), ctx.planet, inst)
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

    def diagnostics(self, output: StoredOutput, metrics: dict, ctx: StageContext) -> list[Plot]:
        dark = np.asarray(output.fields["dark_applied"])
        hot = np.asarray(output.fields["hot_mask"]).astype(bool)
        unit = "e-/s" if metrics.get("exposure_scaled", True) else "e-"
        kinds = np.asarray(output.fields["frame_read_kind"])
        keys = ("dark_source", "dark_units", "temperature_factor", "dark_median", "n_hot", "n_hot_high",
                "n_hot_low", "hot_action", "n_repaired_pixels", "n_unrepaired_pixel_frames", "residual_level_e")
        return [
            Image(f"Dark map applied ({unit})", dark, clabel=unit),
            Image(f"Hot/cold pixels ({int(hot.sum())})", hot.astype(np.uint8), clabel="flagged"),
            histogram(dark.ravel(), bins=128, title="Dark map values", xlabel=unit),
            frame_image(output, preview_index(kinds, len(kinds)), title="Dark-corrected electrons (signal read)"),
            Table("Dark summary", [[k, metrics.get(k)] for k in keys]),
        ]


STAGE = DarkStage()
