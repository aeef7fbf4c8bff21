"""What a stage test gives a stage's context: the planet, the instrument, the profile's typed configs, outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from calib_core.stages.base import StageContext


@dataclass
class Setting:
    """Builds each stage's :class:`StageContext` as the runner does (only the declared reads are handed out)."""

    planet: Any
    instrument: str | None
    cfgs: dict = field(default_factory=dict)          #: typed stage configs by stage name
    outputs: dict = field(default_factory=dict)       #: committed outputs by (stage, instrument)
    chunk_frames: int = 1024

    def context(self, stage: str) -> StageContext:
        return StageContext.of(stage, self.planet, self.instrument, self.cfgs, outputs=self.outputs,
                               chunk_frames=self.chunk_frames)
