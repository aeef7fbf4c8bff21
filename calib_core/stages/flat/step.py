"""The flat stage: a thin adapter over :mod:`.prepare` (the flat to apply) and :mod:`.divide` (the compiled pass)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...diagnostics import Image, Plot, Table, frame_image, histogram
from ...dq import DQ, DQ_DTYPE
from ...frames import Frames, FrameSource, copy_frame_meta
from ...store import StoredOutput, StoreWriter
from ..base import FrameStream, Gate, StageContext, StreamStage, gate
from ..maps import input_read_var, map_label, validate_map
from ..pixels import FRAME_COUNTS, DqTally, report_bad_input
from ..streaming import preview_index
from . import INFO
from .config import FlatConfig
from .divide import flat_frames, inverse
from .prepare import PreparedFlat, prepare_flat

__all__ = ["FlatStage", "STAGE"]


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
        self.inv = inverse(self.prep.applied).reshape(-1)
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

    info = INFO
    Config = FlatConfig

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

    def diagnostics(self, output: StoredOutput, metrics: dict, ctx: StageContext) -> list[Plot]:
        applied = np.asarray(output.fields["flat_applied"])
        plots: list[Plot] = [
            Image("Flat applied (pixel response)", applied, clabel="relative response"),
            histogram(applied.ravel(), bins=128, title="Flat applied", xlabel="relative response"),
        ]
        if "illumination_field" in output.fields:
            plots.append(Image("Illumination field removed from the flat",
                               np.asarray(output.fields["illumination_field"]), clabel="relative illumination"))
        kinds = np.asarray(output.fields["frame_read_kind"])
        plots.append(frame_image(output, preview_index(kinds, len(kinds)),
                                 title="Flat-corrected electrons (signal read)"))
        keys = ("flat_mean", "flat_std", "flat_min", "flat_max", "renorm_factor", "n_bad_flat", "n_dead",
                "data_zero_frac", "data_saturated_frac", "illumination_min", "illumination_max")
        plots.append(Table("Flat summary", [[k, metrics[k]] for k in keys if k in metrics]))
        return plots


STAGE = FlatStage()
