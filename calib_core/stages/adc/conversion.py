"""ADC gain and offset: from the dataset's ``adc_info.csv`` or from the config."""

from __future__ import annotations

from typing import Any

__all__ = ["resolve_conversion"]


def resolve_conversion(conversion: Any, planet: Any, instrument: str) -> tuple[float, float, str]:
    """ADC gain (DN/e-), offset (e-) and their source.

    ``conversion`` None (e.g. the ADC stage is not in the profile) means ``adc_info``.
    """
    if conversion is not None and conversion.source == "value":
        return float(conversion.gain), float(conversion.offset), "value"
    gain, offset = planet.adc(instrument)
    return float(gain), float(offset), "adc_info"
