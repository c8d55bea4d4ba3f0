"""Errors a user can fix (bad data, flags, weights, work dir); the CLI prints them in one line."""


class TrainingError(Exception):
    """Base class: the message says what is wrong and where."""


class DatasetError(TrainingError, ValueError):
    """The data folder cannot be used."""


class WeightsError(TrainingError, ValueError):
    """Backbone weights were requested that are not available locally."""


class ResumeError(TrainingError):
    """--resume / --work-dir point at a folder that does not belong to this run."""


class ExportError(TrainingError):
    """An artifact could not be written or does not reproduce the in-memory model."""


class ParityFailed(ExportError):
    """An exported artifact's outputs are outside the parity tolerance.

    ``suggested_rtol``: the 1-2-5 step of ``--parity-rtol`` this check batch would pass at, when
    only the size of the differences (no top-1 label) failed; None otherwise.
    """

    def __init__(self, message: str, suggested_rtol: float | None = None) -> None:
        super().__init__(message)
        self.suggested_rtol = suggested_rtol


class EvaluateError(TrainingError, ValueError):
    """The data set does not fit the model being evaluated."""


class ImportModelError(TrainingError, ValueError):
    """A model given to ``import`` cannot be read, or its flags do not fit it."""
