"""The photometry stage: a thin adapter over :mod:`.fgs` and :mod:`.airs` (see the package doc)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import median_filter

from ...config.base import ConfigError, check_constraints
from ...diagnostics import Image, Outline, Plot, Series, Table, decimate, histogram
from ...frames import FrameSource
from ...prefetch import in_order_threads
from ...store import StoredOutput, StoreWriter, release_pages
from ..base import Gate, Stage, StageContext, gate
from ..pixels import check_finite_input
from . import INFO
from .airs import AIRS_BACKGROUNDS, airs_reference, measure_airs
from .config import PhotometryConfig
from .fgs import FGS_BACKGROUNDS, fgs_reference, measure_fgs
from .flags import FLAG_DTYPE, flag_bits
from .metrics import photometry_metrics, white_light
from .pairs import SampleChunk, load_samples, sample_layout

__all__ = ["Outputs", "PhotometryStage", "STAGE", "resolve_background"]

FGS1, AIRS = "FGS1", "AIRS-CH0"
#: FGS1 broadband wavelength (``wavelengths.csv`` wl_1), um
FGS1_WAVELENGTH_UM = 0.7
#: at most this many pixels (samples x H x W) are processed at once (bounds memory)
PIXEL_BUDGET = 2_000_000
#: blocks measured at once: each block is a pure function of its samples and the reference, so the
#: results are the same as one at a time, and the core the detector chain used is busy again
MEASURE_THREADS = 2
#: reference samples gathered between two releases of the input's memory-mapped pages
REFERENCE_GROUP = 16
#: points of a diagnostic curve
MAX_CURVE_POINTS = 2000


def resolve_background(cfg: PhotometryConfig, instrument: str) -> str:
    """The background method for ``instrument`` (``auto`` resolved).

    Raises
    ------
    ConfigError
        When the method does not apply to the instrument (e.g. ``rows`` for FGS1).
    """
    method = cfg.background.method
    allowed = AIRS_BACKGROUNDS if instrument == AIRS else FGS_BACKGROUNDS
    if method == "auto":
        return allowed[0]
    if method not in allowed:
        raise ConfigError("calib.photometry.background.method", method,
                          f"for {instrument} must be one of auto, {', '.join(allowed)}")
    return method


def _instrument(ctx: StageContext, frame_shape: tuple[int, int]) -> str:
    if ctx.instrument in (FGS1, AIRS):
        return ctx.instrument
    return AIRS if frame_shape[1] > frame_shape[0] else FGS1


def _read_variance(source: FrameSource, ctx: StageContext, instrument: str) -> np.ndarray | None:
    """Read-noise variance per read (e-^2): the upstream ``read_var`` field, else the calibration map."""
    field = source.output.fields.get("read_var")
    if field is not None:
        return np.asarray(field, np.float64)
    if ctx.planet is None:
        return None
    read = np.asarray(ctx.planet.calibration(instrument).read, np.float64)
    return read * read if read.shape == source.frame_shape else None


def _wavelengths(source: FrameSource, ctx: StageContext, instrument: str, c0: int, c1: int) -> np.ndarray:
    """Channel wavelengths in ascending order (um); NaN when unknown."""
    if instrument != AIRS:
        return np.array([FGS1_WAVELENGTH_UM])
    wl = source.output.meta.get("wavelength_um")
    if wl is None and ctx.planet is not None:
        wl = ctx.planet.axis(instrument).wavelength_um
    if wl is None:
        return np.full(c1 - c0, np.nan)
    return np.asarray(wl, np.float64)[c0:c1][::-1].copy()


@dataclass
class Outputs:
    """Output memory maps (ascending channel order)."""

    flux: np.ndarray
    flux_var: np.ndarray
    sky: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    flags: np.ndarray
    time_s: np.ndarray
    n_bad: np.ndarray

    @classmethod
    def create(cls, writer: StoreWriter, n: int, c: int) -> "Outputs":
        return cls(
            writer.create("photometry_flux", (n, c), np.float64, "electron"),
            writer.create("photometry_flux_var", (n, c), np.float64, "electron2"),
            writer.create("photometry_sky", (n, c), np.float64, "electron/pixel"),
            writer.create("photometry_centroid_x", (n,), np.float64, "pixel"),
            writer.create("photometry_centroid_y", (n,), np.float64, "pixel"),
            writer.create("photometry_flags", (n, c), FLAG_DTYPE, "bitmask (calib_core.stages.photometry.flags.PhotFlag)"),
            writer.create("time_s", (n,), np.float64, "s"),
            writer.create("n_bad_pixels", (n, c), np.int32, "pixel"),
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.flux, self.flux_var, self.sky, self.cx, self.cy, self.flags, self.time_s, self.n_bad)


class PhotometryStage(Stage):
    """Aperture / PSF / optimal photometry (FGS1) and spectral extraction (AIRS-CH0)."""

    info = INFO
    Config = PhotometryConfig

    def run(self, inp: FrameSource, cfg: PhotometryConfig, ctx: StageContext, writer: StoreWriter) -> dict:
        check_constraints(cfg, "calib.photometry")
        instrument = _instrument(ctx, inp.frame_shape)
        method = cfg.photometry.method
        background = resolve_background(cfg, instrument)
        layout = sample_layout(inp.axis.read_kind)
        read_var = _read_variance(inp, ctx, instrument) if layout.mode == "reads" else None
        h, w = inp.frame_shape
        c0, c1 = (int(cfg.airs.columns[0]), int(cfg.airs.columns[1])) if instrument == AIRS else (0, w)
        if c1 > w:
            raise ConfigError("calib.photometry.airs.columns", list(cfg.airs.columns),
                              f"must lie within the {w} detector columns")
        airs = instrument == AIRS

        def load(samples: np.ndarray):
            chunk = load_samples(inp, layout, samples, read_var)
            return chunk.crop(c0, c1) if airs else chunk

        n_ref = min(cfg.reference.n_frames, layout.n_samples)
        ref_samples = np.unique(np.linspace(0, layout.n_samples - 1, n_ref).round().astype(np.int64))
        parts = []
        for g in range(0, len(ref_samples), REFERENCE_GROUP):   # scattered reads map whole file folios:
            parts.append(load(ref_samples[g:g + REFERENCE_GROUP]))   # release them group by group
            release_pages(inp.data, inp.var, inp.dq)
        ref_chunk = SampleChunk.concatenate(parts)
        if airs:
            ref, measure = airs_reference(ref_chunk, cfg, method, background), measure_airs
        else:
            ref, measure = fgs_reference(ref_chunk, cfg, method, background), measure_fgs
        del ref_chunk
        ctx.report(0.05, "reference built")

        n_chan = c1 - c0 if airs else 1
        out = Outputs.create(writer, layout.n_samples, n_chan)
        per_sample = (2 if layout.mode == "reads" else 1) * h * w
        block = max(1, min(ctx.chunk_frames, PIXEL_BUDGET // per_sample))
        n_rejected = n_bad_input = 0

        def measured(b0: int, b1: int):
            chunk = load(np.arange(b0, b1))
            n_bad = check_finite_input(chunk, stage="photometry", key=cfg.io.input_key,
                                       require=cfg.validation.require_finite_inputs)
            return n_bad, measure(chunk, ref, cfg, method, background)

        for (b0, b1), (n_bad, res) in in_order_threads(measured, layout.blocks(block), MEASURE_THREADS):
            n_bad_input += n_bad
            order = slice(None, None, -1) if airs else slice(None)
            out.flux[b0:b1] = res.flux[:, order]
            out.flux_var[b0:b1] = res.flux_var[:, order]
            out.sky[b0:b1] = res.sky[:, order]
            out.flags[b0:b1] = res.flags[:, order]
            out.n_bad[b0:b1] = res.n_bad[:, order]
            out.cx[b0:b1], out.cy[b0:b1] = res.centroid_x, res.centroid_y
            out.time_s[b0:b1] = inp.axis.time_s[layout.signal[b0:b1]]
            n_rejected += int(res.n_rejected.sum())
            release_pages(inp.data, inp.var, inp.dq, *out.arrays())
            ctx.report(0.05 + 0.95 * b1 / layout.n_samples, f"{b1}/{layout.n_samples} samples")

        wavelengths = _wavelengths(inp, ctx, instrument, c0, c1)
        writer.put("channel_wavelength_um", wavelengths, "um")
        writer.put("reference_frame", ref.image[:, ::-1] if airs else ref.image, "electron")
        writer.meta.update({
            "instrument": instrument, "method": method, "background": background, "sample_mode": layout.mode,
            "n_channels": n_chan, "wavelength_order": "ascending", "wavelength_um": wavelengths.tolist(),
            "units": {"photometry_flux": "electron", "photometry_flux_var": "electron2",
                      "photometry_sky": "electron/pixel", "photometry_centroid_x": "pixel",
                      "photometry_centroid_y": "pixel", "time_s": "s"},
            "centroid_x_meaning": "spectral shift (columns)" if airs else "centroid column",
            "centroid_y_meaning": "trace row centre" if airs else "centroid row",
            "flag_bits": flag_bits(),
            "airs_columns": [c0, c1] if airs else None,
            "aperture_radius_px": None if airs else cfg.aperture.radius_px,
            "box_half_width_rows": cfg.airs.half_width_rows if airs else None,
            "reference": ref.to_meta(),
        })
        counts = {"n_pixels_rejected": n_rejected, "n_nonfinite_input": n_bad_input}
        return photometry_metrics(out, layout, cfg, instrument, method, background, (h, w), counts, ref)

    def gates(self, metrics: dict, cfg: PhotometryConfig) -> list[Gate]:
        qc = cfg.quality_checks
        if not qc.enabled:
            return []
        gates = [
            gate("robust_std_sanity", metrics.get("robust_std_rel"), "<=", qc.max_robust_std_rel,
                 "MAD-based relative scatter of the detrended white-light flux"),
            gate("flagged_fraction", metrics.get("flagged_fraction"), "<=", qc.max_flagged_fraction,
                 "fraction of sample-channels with any photometry flag"),
            gate("centroid_rms", metrics.get("centroid_rms_px"), "<=", qc.max_centroid_rms_px,
                 "rms of the centroid (FGS1) / trace row centre and spectral shift (AIRS)"),
            gate("centroid_in_bounds", metrics.get("centroid_margin_px"), ">=", qc.min_centroid_margin_px,
                 "distance of the median centroid to the frame edge"),
        ]
        for g in gates:
            g.action = qc.action_on_fail
        return gates

    def diagnostics(self, output: StoredOutput, metrics: dict, ctx: StageContext) -> list[Plot]:
        f = output.fields
        meta = output.meta
        airs = meta.get("instrument") == AIRS
        t = np.asarray(f["time_s"])
        flux = np.asarray(f["photometry_flux"])
        white, white_var = white_light(flux, np.asarray(f["photometry_flux_var"]))
        plots: list[Plot] = []
        for title, y, ylabel in (
            ("White-light flux", white, "electrons per sample"),
            ("Centroid x" + (" (spectral shift)" if airs else ""), np.asarray(f["photometry_centroid_x"]), "pixel"),
            ("Centroid y" + (" (trace row)" if airs else ""), np.asarray(f["photometry_centroid_y"]), "pixel"),
            ("Sky level (median over channels)", np.nanmedian(np.asarray(f["photometry_sky"]), axis=1),
             "electrons per pixel"),
        ):
            x, yy = decimate(t, y, MAX_CURVE_POINTS)
            plots.append(Series(title, np.asarray(x) / 3600.0, yy, xlabel="time since visit start (h)", ylabel=ylabel))
        if airs:
            plots.append(Series("Median extracted spectrum", np.asarray(f["channel_wavelength_um"]).tolist(),
                                np.nanmedian(flux, axis=0).tolist(), xlabel="wavelength (um)",
                                ylabel="electrons per sample"))
            outline = Outline("box_rows", trace_row=meta["reference"]["trace_row"][::-1],
                              half_width_rows=meta.get("box_half_width_rows"))
            plots.append(Image("Reference stack (crop, ascending wavelength) with extraction box",
                               np.asarray(f["reference_frame"]), xlabel="channel", clabel="electrons",
                               outline=outline))
        else:
            outline = Outline("circle", x=meta["reference"]["x"], y=meta["reference"]["y"],
                              r=meta.get("aperture_radius_px"))
            plots.append(Image("Reference stack with aperture", np.asarray(f["reference_frame"]),
                               clabel="electrons", outline=outline))
        with np.errstate(invalid="ignore", divide="ignore"):
            trend = median_filter(np.nan_to_num(white), size=min(51, max(1, len(white) // 2 * 2 - 1)),
                                  mode="nearest")
            pulls = (white - trend) / np.sqrt(white_var)
        plots.append(histogram(pulls, bins=64, title="White-light residual / propagated sigma",
                               xlabel="(flux - running median) / sigma", log=False))
        keys = ("method", "background", "sample_mode", "n_frames_in", "n_samples_out", "n_unpaired_reads",
                "robust_std_rel", "predicted_std_rel", "scatter_to_error", "median_flux", "flagged_fraction",
                "bad_pixel_fraction")
        plots.append(Table("Photometry summary", [[k, metrics.get(k)] for k in keys]))
        return plots


STAGE = PhotometryStage()
