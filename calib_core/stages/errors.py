"""The errors a stage or the runner raises: each names its stage (and instrument) in one line."""

from __future__ import annotations

__all__ = ["DataError", "QCError", "StageError", "UndeclaredRead"]


class QCError(RuntimeError):
    """A QC gate with ``action_on_fail: error`` failed; the message names stage, gate and value."""


class DataError(ValueError):
    """The data cannot be calibrated as configured; the message names the culprit (file, key, value, frame)."""


#: errors whose message already names the culprit (file, key or value): shown without their type name
_NAMED = ("ConfigError", "DataError", "DataLayoutError", "InputError", "FileNotFoundError", "UndeclaredRead")


class StageError(RuntimeError):
    """A stage could not complete; the message is one line, ``<stage>/<instrument>: <cause>``.

    The cause names the file, key or value when there is one: the stages raise
    named errors for the bad inputs and degenerate data they detect; anything
    else keeps its type and message (and the run log keeps its traceback).
    """

    def __init__(self, stage: str, instrument: str | None, cause: str):
        self.stage, self.instrument, self.cause = stage, instrument, cause
        super().__init__(f"{stage}/{instrument or 'planet'}: {cause}")

    @classmethod
    def wrap(cls, stage: str, instrument: str | None, exc: BaseException) -> "StageError":
        """``exc`` raised while ``stage`` ran, as a StageError (a StageError passes through)."""
        if isinstance(exc, StageError):
            return exc
        kind = type(exc).__name__
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) and exc.strerror:
            where = exc.filename or "its output directory"
            cause = f"cannot read or write {where}: {exc.strerror}"
        else:
            text = str(exc).splitlines()[0] if str(exc) else ""
            text = text.removeprefix(f"{stage}: ")
            cause = text if kind in _NAMED and text else f"{kind}: {text}" if text else kind
        return cls(stage, instrument, cause)


class UndeclaredRead(LookupError):
    """A stage asked its context for a config section or output its ``info`` does not declare."""
