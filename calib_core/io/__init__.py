"""Data access: the Kaggle-layout reader and the synthetic demo planet."""

from .demo import DEMO_PLANET_ID, DEMO_SEED, ensure_demo, expected_cds, load_truth, make_demo
from .kaggle import (
    AIRS_CROP,
    FRAME_SHAPE,
    FULL_FRAMES,
    INSTRUMENTS,
    N_TARGETS,
    CalibrationMaps,
    DataLayoutError,
    FrameAxis,
    Planet,
    list_planets,
    open_planet,
)

__all__ = [
    "AIRS_CROP",
    "FRAME_SHAPE",
    "FULL_FRAMES",
    "INSTRUMENTS",
    "N_TARGETS",
    "CalibrationMaps",
    "DataLayoutError",
    "FrameAxis",
    "Planet",
    "list_planets",
    "open_planet",
    "DEMO_PLANET_ID",
    "DEMO_SEED",
    "ensure_demo",
    "expected_cds",
    "load_truth",
    "make_demo",
]
