"""What the engine knows about a stage before importing any of its numerics.

Each stage package (``calib_core/stages/<name>/__init__.py``) declares one
:class:`StageInfo`: its place in the chain (scope, input and output kinds, the
default I/O keys) and everything it reads besides its input and its own config
section -- other stages' config sections, other stages' outputs, files named by
its own config keys.  The runner hashes exactly these into the stage's cache key
and the stage's context hands out exactly these (an undeclared read fails), so a
cache key can never miss what a stage depends on; the app's stale marking asks
the same declarations (:mod:`calib_core.plan`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StageInfo"]


@dataclass(frozen=True)
class StageInfo:
    """Static description of one stage.

    Attributes
    ----------
    name, title : str
        Registry name (the config section ``calib.<name>``) and human title.
    scope : {"instrument", "planet"}
        Runs once per instrument, or once per planet on all instruments' outputs.
    input_kind : {"raw", "frames", "series"}
        Raw uint16 reads, calibrated frames, or a series stage's stored output.
    output_kind : {"frames", "series"}
        Frame planes (data, var, dq) or per-sample series.
    default_io : (str, str)
        ``io.input_key`` / ``io.output_key`` of the chain in the design document.
    reads_config : tuple of str
        Other stages' config sub-sections read, as dotted paths
        (``"phase.ephemeris"``).
    reads_outputs : tuple of str
        Other stages' outputs read besides the input (same instrument for an
        instrument stage, every instrument for a planet stage).
    reads_files : tuple of str
        Keys of the stage's own section whose value is a file path
        (``"per_pixel_map.path"``); the file's content is part of the cache key.
    """

    name: str
    title: str
    scope: str = "instrument"
    input_kind: str = "frames"
    output_kind: str = "frames"
    default_io: tuple[str, str] = ("", "")
    reads_config: tuple[str, ...] = ()
    reads_outputs: tuple[str, ...] = ()
    reads_files: tuple[str, ...] = ()
