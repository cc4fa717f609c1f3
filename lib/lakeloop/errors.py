"""Exceptions shared by jobs, and the process exit codes they map to."""

from __future__ import annotations

__all__ = ["LakeloopError", "DataQualityError", "GateRefused", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE",
           "EXIT_DATA_QUALITY", "EXIT_GATE_REFUSED", "exit_code_for"]

EXIT_OK = 0
EXIT_ERROR = 1  # unexpected failure
EXIT_USAGE = 2  # bad arguments or configuration
EXIT_DATA_QUALITY = 3  # quarantine rate or drift gate failed
EXIT_GATE_REFUSED = 4  # model evaluation gate refused the challenger


class LakeloopError(Exception):
    """Base class of the errors lakeloop raises on purpose."""

    exit_code = EXIT_ERROR


class DataQualityError(LakeloopError):
    """Data failed a quality gate (quarantine rate, drift); the message is the readable report."""

    exit_code = EXIT_DATA_QUALITY


class GateRefused(LakeloopError):
    """A model did not pass the evaluation gate; the champion is unchanged."""

    exit_code = EXIT_GATE_REFUSED


def exit_code_for(exc: BaseException) -> int:
    from lakeloop.conf import ConfError

    if isinstance(exc, ConfError):
        return EXIT_USAGE
    return getattr(exc, "exit_code", EXIT_ERROR)
