"""Data access: the reader of the Ariel Data Challenge (2024 and 2025) Kaggle data layout.

Layout (2025; see ``ariel_data.md`` sections 1.1-1.5)::

    <root>/train.csv  train_star_info.csv  wavelengths.csv  adc_info.csv  axis_info.parquet
    <root>/<split>/<planet_id>/AIRS-CH0_signal_<visit>.parquet       (n_frames, 32*356) uint16
    <root>/<split>/<planet_id>/FGS1_signal_<visit>.parquet           (n_frames, 32*32)  uint16
    <root>/<split>/<planet_id>/<instrument>_calibration_<visit>/{dark,dead,flat,read,linear_corr}.parquet

The 2024 layout differs only in names: ``<instrument>_signal.parquet``,
``<instrument>_calibration/``, ``train_labels.csv`` and per-planet
``<split>_adc_info.csv`` instead of the single-row ``adc_info.csv``.

Signal files are streamed with :meth:`pyarrow.parquet.ParquetFile.iter_batches`
(no pandas); memory use is bounded by one chunk of frames.  Every layout
problem raises :class:`DataLayoutError` naming the file (or key) and what was
expected versus found.

Modules: :mod:`.layout` (fixed names and shapes, dataset paths, listing,
confinement, :class:`DataLayoutError`), :mod:`.csv_tables` (the CSV tables),
:mod:`.parquet_frames` (signal frames, calibration and axis tables),
:mod:`.planet` (:class:`Planet`: one visit assembled from them) and
:mod:`.validate` (every input of a visit checked before a run).  The demo
planet that writes this layout is made by :mod:`calib_core.sim`.
"""

from .layout import AIRS_CROP, FRAME_SHAPE, FULL_FRAMES, INSTRUMENTS, N_TARGETS, DataLayoutError, list_planets
from .planet import CalibrationMaps, FrameAxis, Planet, open_planet

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
]
