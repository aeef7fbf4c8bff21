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

from ..info import StageInfo

INFO = StageInfo("dark", "Dark current", default_io=("adc_corrected", "dark_corrected"),
                 reads_config=("adc.conversion",),        # the ADC gain converts a per-pixel map given in ADU/s
                 reads_files=("per_pixel_map.path",))
