"""``top_level_calib``: optional last stage, honest sigmas for the predicted spectrum.

Input: the ``depths`` stage output of one planet (fields ``mu``, ``sigma``, one
value per bin; bin 0 = FGS1).  Output: fields ``mu`` (unchanged), ``sigma``
(calibrated) and ``scale`` (``sigma_out / sigma_in`` per bin).

* ``method: none`` (default): pass-through, metrics ``{"skipped": true}``.
* ``method: temperature | corel`` with ``model_path``: apply the model that
  ``spectramind sigma-calibrate`` fitted on many labelled planets (the method
  must match the model's).
* without ``model_path``: fit on this planet's own labels (``fitted_on: "this
  planet (in-sample)"``); a planet without labels is a configuration error.

Metrics before/after (challenge score, NLL, coverage, ECE, z stats) are
computed whenever the planet has labels; the QC gates check the calibrated
68 % coverage and the z-score mean.  Algorithms: :mod:`calib_core.sigma`.
"""

from ..info import StageInfo

INFO = StageInfo("top_level_calib", "Top-level sigma calibration", scope="planet", input_kind="series",
                 output_kind="series", default_io=("depths", "depths_calibrated"),
                 reads_files=("model_path", "wavelengths_path"))
