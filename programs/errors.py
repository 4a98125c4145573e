"""The errors a user meets, in one family: the CLI prints any of them as one line and exits with code 2.

A leaf module (it imports nothing of labelloop), so every layer can raise them.
"""

from __future__ import annotations

import re


class LabelloopError(Exception):
    """Base of every error labelloop reports to a user; the message says what was expected and what arrived."""


class ConfigError(LabelloopError, ValueError):
    """A config, taxonomy or saved-program file is invalid or asks for something that does not exist."""


class DataError(LabelloopError, ValueError):
    """A data file or frame is missing, unreadable, or lacks the columns and values a project needs."""


class ModelNotAvailable(LabelloopError, RuntimeError):
    """A model (the embedded LLM, a GGUF file, the sentence embedder) is not installed or fails its checksum."""


class NotEnoughVotes(LabelloopError, ValueError):
    """The weak labels are too few or too one-sided to fit a label model or train a student."""


class StateError(LabelloopError, RuntimeError):
    """The project is not in the state a command needs (answers not stored yet, an output that would be overwritten)."""


class TaxonomyError(LabelloopError, RuntimeError):
    """A taxonomy step's answers stayed invalid after every attempt; the message names the step and the problems."""

    def __init__(self, step: str, problems: list[str], attempts: int):
        self.step, self.problems, self.attempts = step, problems, attempts
        super().__init__(f"taxonomy step {step!r} gave no valid answer in {attempts} attempt(s); "
                         f"last problems: {'; '.join(problems)}")


class LLMUnavailable(LabelloopError, RuntimeError):
    """The LLM endpoint keeps failing (a rejected key, an unreachable server): the run stops instead of failing every record."""


_SECRETS_IN_TEXT = (
    (re.compile(r"(?<![\w.%+-])[\w.%+-]+:[^@\s/:]+@(?=[\w\[])"), "***@"),  # user:password@host
    (re.compile(r"(?i)([?&][\w-]*(?:key|token|secret|password|auth|sig)[\w-]*=)[^&\s'\"]+"), r"\1***"),  # ?api_key=...
    (re.compile(r"(?i)(bearer\s+)[\w.~+/-]+=*"), r"\1***"),  # Authorization: Bearer ...
    (re.compile(r"\b(sk-(?:[a-z]+-)?)[A-Za-z0-9_-]{8,}"), r"\1***"),  # an OpenAI-style key echoed in an error
)


def redact_secrets(text: str) -> str:
    """``text`` (an error message, a log line) with credentials in URLs and bearer tokens masked.

    >>> redact_secrets("failed to connect to bob:pw@127.0.0.1:80 (https://h/v1?api_key=k1&x=2), Bearer sk-abc")
    'failed to connect to ***@127.0.0.1:80 (https://h/v1?api_key=***&x=2), Bearer ***'
    >>> redact_secrets("Incorrect API key provided: sk-proj-AbCdEf123456789")
    'Incorrect API key provided: sk-proj-***'
    """
    for pattern, replacement in _SECRETS_IN_TEXT:
        text = pattern.sub(replacement, text)
    return text
