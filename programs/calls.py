"""Bounded retries for one LLM ask, and what a failed ask means.

DSPy and LiteLLM are built with ``num_retries=0`` (see ``make_lm``), so these are the only retries:
transient failures (timeouts, dropped connections, HTTP 429 and 5xx) are retried a few times with
exponential backoff, honouring a server's Retry-After; anything else is raised at once, because a
wrong key, a missing model or a malformed request fails the same way every time.

What arrives from ``dspy.LM(...)`` in dspy 3.4.1 is a ``dspy.utils.exceptions.LMError`` subclass
carrying ``status`` and ``retry_after``, raised from the lm15 (or LiteLLM / openai / httpx) error
that caused it; a custom engine's own exception (llama.cpp's ``ValueError``) arrives as the cause
of an ``LMUnexpectedError``. The classifiers therefore walk ``__cause__`` / ``__context__`` and let
the outermost exception that says something decide.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from dspy.utils import exceptions as dx

from labelloop.programs.errors import redact_secrets

T = TypeVar("T")
logger = logging.getLogger("labelloop")

# DSPy's public errors and the lm15 errors they are raised from share these meanings.
_TRANSIENT_TYPES = (dx.LMRateLimitError, dx.LMTimeoutError, dx.LMServerError, dx.LMTransportError, dx.LMLockTimeoutError,
                    TimeoutError, ConnectionError, socket.gaierror)
_PERMANENT_TYPES = (dx.LMAuthError, dx.LMBillingError, dx.LMInvalidRequestError, dx.LMNotConfiguredError,
                    dx.LMConfigurationError, dx.LMUnsupportedFeatureError, dx.LMCollectionLimitError, dx.AdapterParseError)
_FATAL_TYPES = (dx.LMAuthError, dx.LMBillingError, dx.LMUnsupportedModelError, dx.LMNotConfiguredError,
                ConnectionRefusedError, socket.gaierror)
# Class names from libraries not imported here (lm15's canonical errors, openai, httpx, LiteLLM).
_TRANSIENT_NAMES = {"RateLimitError", "ServerError", "InternalServerError", "ServiceUnavailableError", "TransportError",
                    "APIConnectionError", "APITimeoutError", "Timeout", "TimeoutException", "NetworkError",
                    "RemoteProtocolError", "ConnectError", "ReadError", "WriteError", "ReadTimeout", "ConnectTimeout"}
_PERMANENT_NAMES = {"AuthError", "AuthenticationError", "PermissionDeniedError", "BillingError", "BudgetExceededError",
                    "InvalidRequestError", "BadRequestError", "NotFoundError", "UnsupportedModelError",
                    "UnprocessableEntityError", "ContextLengthError", "ContextWindowExceededError", "NotConfiguredError"}
_FATAL_NAMES = {"AuthError", "AuthenticationError", "PermissionDeniedError", "BillingError", "UnsupportedModelError",
                "NotConfiguredError"}
_CONTEXT_NAMES = {"ContextLengthError", "ContextWindowExceededError"}
_CONTEXT_TEXT = re.compile(r"exceeds? (the )?context window|maximum context length|context length exceeded|"
                           r"context_length_exceeded|context window exceeded|prompt is too long|too many tokens", re.I)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or during, outermost first (cycles cut)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries: DSPy/lm15 ``status``, openai/LiteLLM ``status_code``, httpx's response."""
    for value in (getattr(exc, "status", None), getattr(exc, "status_code", None),
                  getattr(getattr(exc, "response", None), "status_code", None)):
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None


def _transient_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same request again may succeed: a timeout, a dropped connection, HTTP 408/429/5xx.

    The outermost exception that is classifiable decides: a DSPy error's class and status are its
    engine's verdict, and an unclassified wrapper (``LMUnexpectedError``) defers to its cause.
    """
    for err in _chain(exc):
        if isinstance(err, _PERMANENT_TYPES) or _names(err) & _PERMANENT_NAMES:
            return False
        if isinstance(err, _TRANSIENT_TYPES) or _names(err) & _TRANSIENT_NAMES:
            return True
        status = _status(err)
        if status is not None and status >= 400:
            return _transient_status(status)
    return False


def _parse_retry_after(value: str) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked to wait (its Retry-After / retry-after-ms header), or None when it said nothing."""
    for err in _chain(exc):
        hint = getattr(err, "retry_after", None)
        if isinstance(hint, int | float) and not isinstance(hint, bool) and hint >= 0:
            return float(hint)
        headers = getattr(getattr(err, "response", None), "headers", None) or getattr(err, "headers", None)
        if not hasattr(headers, "items"):
            continue
        headers = {str(k).lower(): str(v) for k, v in headers.items()}
        if "retry-after-ms" in headers:
            try:
                return max(0.0, float(headers["retry-after-ms"]) / 1000)
            except ValueError:
                pass
        if "retry-after" in headers and (seconds := _parse_retry_after(headers["retry-after"])) is not None:
            return seconds
    return None


def is_context_overflow(exc: BaseException) -> bool:
    """Whether the prompt is too long for the model's context (a shorter text may succeed; the same one never will).

    llama-cpp-python raises ``ValueError("Requested tokens (N) exceed context window of M")`` in
    process; LiteLLM raises ``ContextWindowExceededError``; lm15 ``ContextLengthError``; servers
    answer 400 with "maximum context length" or "context length exceeded" in the message.
    """
    for err in _chain(exc):
        if isinstance(err, dx.ContextWindowExceededError) or _names(err) & _CONTEXT_NAMES:
            return True
        if _CONTEXT_TEXT.search(str(err)):
            return True
    return False


def is_fatal(exc: BaseException) -> bool:
    """Whether the endpoint or the credentials are wrong, so every other ask would fail too and the run should stop.

    Rejected or missing credentials (401/403), no quota, a model or path the server does not have
    (404), nothing listening or a host that does not resolve. A context overflow is a 400 about
    one record, not about the endpoint.
    """
    for err in _chain(exc):
        if isinstance(err, _FATAL_TYPES) or _names(err) & _FATAL_NAMES:
            return True
        status = _status(err)
        if status in (401, 403, 404):
            return True
    return False


def backoff(attempt: int, *, base_delay: float = 1.0, max_delay: float = 60.0, hint: float | None = None) -> float:
    """Seconds to wait before try ``attempt + 1``: the server's hint if any, else ``base * 2**(attempt-1)``
    with jitter (half of it random, so concurrent asks that failed together do not retry together), capped."""
    if hint is not None:
        return min(hint, max_delay)
    delay = min(base_delay * 2 ** (attempt - 1), max_delay)
    return delay * (0.5 + random.random() / 2)


def call_with_retries(fn: Callable[[], T], *, attempts: int = 4, base_delay: float = 1.0, max_delay: float = 60.0,
                      sleep: Callable[[float], object] = time.sleep) -> T:
    """``fn()``, tried up to ``attempts`` times while it fails transiently; the last error is re-raised.

    Non-transient errors (authentication, bad request, missing model, unparsable answers, anything
    unknown) are raised on the first try: repeating them costs money and changes nothing.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for attempt in range(1, attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = backoff(attempt, base_delay=base_delay, max_delay=max_delay, hint=retry_after(exc))
            first_line = redact_secrets(next(iter(str(exc).strip().splitlines()), ""))
            logger.info("LLM call failed (%s: %s); try %d of %d in %.1fs", type(exc).__name__, first_line[:200],
                        attempt + 1, attempts, delay)
            sleep(delay)
    return fn()
