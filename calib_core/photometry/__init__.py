"""Photometry kernels: FGS1 aperture / PSF / optimal photometry and AIRS-CH0 spectral extraction.

Pure, vectorised array functions (frames first) used by
:class:`calib_core.stages.photometry.PhotometryStage`; each module declares
its public names in ``__all__``.
"""

from .airs import *  # noqa: F401,F403
from .background import *  # noqa: F401,F403
from .centroid import *  # noqa: F401,F403
from .extract import *  # noqa: F401,F403
from .fgs import *  # noqa: F401,F403
from .flags import *  # noqa: F401,F403
from .geometry import *  # noqa: F401,F403
from .pairs import *  # noqa: F401,F403
from .psf import *  # noqa: F401,F403
from .stack import *  # noqa: F401,F403
