"""Fixed settings of the simulated instruments: visit timing, ADC, noise levels, wavelength grids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.layout import AIRS_CROP, FRAME_SHAPE, FULL_FRAMES

__all__ = ["DEMO_PLANET_ID", "DEMO_SEED", "DEFAULT_N_PAIRS", "GENERATOR_VERSION", "InstrumentSim", "SIMS",
           "airs_wavelengths", "target_wavelengths", "airs_column_targets", "pair_times_s", "wavelength_coordinate"]

DEMO_PLANET_ID = 1100001
DEMO_SEED = 0
#: per instrument: one pair every 21.6 s over the 7.5 h visit (>= 3 samples per bin at 400 phase bins)
DEFAULT_N_PAIRS = 1250
GENERATOR_VERSION = 2

OBSERVATION_S = 27000.0  # visit length in seconds (7.5 h)
READ_TIME_OFFSETS_S = (0.1, 0.2)  # axis0 time of the first / second read after the start of a pair slot
FIRST_READ_EXPTIME_S = 0.1  # integration between reset and the first read
ADC_GAIN = 0.4369  # DN per electron
ADC_OFFSET = -1000.0  # electrons = DN / gain + offset
DN_MAX = 65535
KTC_RMS_E = 10.0  # reset offset, e- rms, shared by both reads of a pair
COMMON_MODE_RMS_E = 3.0  # per-read offset common to all pixels, e- rms
CR_RATE_PER_PIXEL_READ = 3e-6  # cosmic-ray hits per pixel per second read
CR_MIN_HITS = 3  # at least this many ordinary hits per instrument
CR_ELECTRONS = (500.0, 20000.0)  # log-uniform deposit range
CR_NEIGHBOUR_PROB = 0.3
N_SATURATING_HITS = 2  # large deposits per instrument that clip at DN_MAX
SATURATING_ELECTRONS = (2.2e5, 3.0e5)
FGS_WAVELENGTH_UM = 0.7
# AIRS-CH0 wavelength grid: cubic through the measured end points and crop edges (ariel_data.md 1.4-1.5)
_AIRS_WAVELENGTH_ANCHORS = ((0, 4.078463), (39, 3.895036), (320, 1.951761), (355, 1.633253))


@dataclass(frozen=True)
class InstrumentSim:
    """Fixed simulation settings of one instrument."""

    name: str
    cds_s: float  # integration between the two reads of a pair, s
    jitter_rms_px: float  # per-axis pointing jitter per pair, px
    hot_fraction: float
    very_hot_fraction: float  # fraction of the hot pixels made 50-500 e-/s
    dead_fraction: float
    high_read_fraction: float  # pixels with read noise 20-150 e-
    chunk_pairs: int  # pairs simulated and written per parquet row group

    @property
    def shape(self) -> tuple[int, int]:
        return FRAME_SHAPE[self.name]

    @property
    def full_pairs(self) -> int:
        return FULL_FRAMES[self.name] // 2


SIMS = {
    "AIRS-CH0": InstrumentSim("AIRS-CH0", 4.5, 0.013, 0.007, 0.05, 0.002, 0.028, 256),
    "FGS1": InstrumentSim("FGS1", 0.1, 0.1, 0.007, 0.05, 0.003, 0.038, 2048),
}


def airs_wavelengths() -> np.ndarray:
    """Wavelength of each AIRS-CH0 detector column in um, (356,), descending 4.078463 -> 1.633253."""
    cols, wl = np.array(_AIRS_WAVELENGTH_ANCHORS).T
    grid = np.polyval(np.polyfit(cols, wl, 3), np.arange(FRAME_SHAPE["AIRS-CH0"][1]))
    return np.round(grid, 6)


def target_wavelengths() -> np.ndarray:
    """The 283 target wavelengths in um: FGS1 (0.7) then the AIRS crop in ascending order."""
    lo, hi = AIRS_CROP
    return np.concatenate([[FGS_WAVELENGTH_UM], airs_wavelengths()[lo:hi][::-1]])


def airs_column_targets() -> np.ndarray:
    """Index (0-based, into the 283 targets) of the bin each AIRS-CH0 detector column belongs to.

    Column ``c`` in the crop maps to target ``1 + (320 - c)``; columns outside the crop
    use the nearest cropped column.
    """
    lo, hi = AIRS_CROP
    cols = np.clip(np.arange(FRAME_SHAPE["AIRS-CH0"][1]), lo, hi - 1)
    return 1 + (hi - 1 - cols)


def pair_times_s(n_pairs: int) -> tuple[np.ndarray, float]:
    """Axis times (s) of all reads for ``n_pairs`` pairs spread over the visit, and the pair period (s)."""
    period = OBSERVATION_S / n_pairs
    starts = np.arange(n_pairs) * period
    times = np.empty(2 * n_pairs)
    times[0::2] = starts + READ_TIME_OFFSETS_S[0]
    times[1::2] = starts + READ_TIME_OFFSETS_S[1]
    return times, period


def wavelength_coordinate(wavelength_um: np.ndarray) -> np.ndarray:
    """Map wavelengths to [-1, 1] over 0.7 .. 4.078463 um (for the wavelength dependence of the drift)."""
    lo, hi = FGS_WAVELENGTH_UM, _AIRS_WAVELENGTH_ANCHORS[0][1]
    return 2 * (wavelength_um - lo) / (hi - lo) - 1
