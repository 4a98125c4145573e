"""Retry classification on the exceptions dspy 3.4.1 really raises, and the bounded backoff loop.

The exceptions come from a real ``dspy.LM`` talking HTTP to ``FakeOpenAIServer`` (on both DSPy's
native lm15 engine and the LiteLLM compatibility engine, whose chains differ), not from hand-built
instances, so a DSPy upgrade that changes what arrives fails here.
"""

from __future__ import annotations

import email.utils
import socket
import time

import dspy
import httpx
import openai
import pytest
from dspy.utils import exceptions as dx

from labelloop.programs.calls import call_with_retries, is_context_overflow, is_fatal, is_transient, retry_after
from labelloop.programs.choice import question_program
from labelloop.programs.lm import LMSpec
from tests.fake_openai import DROP, Failure, FakeOpenAIServer

# model name sent by the client -> how the server answers it
FAILURES = {
    "rate-limited": Failure(429, retry_after=7),
    "server-error": Failure(500),
    "unavailable": Failure(503),
    "unauthorized": Failure(401, message="Incorrect API key provided"),
    "forbidden": Failure(403),
    "no-such-model": Failure(404, message="The model `no-such-model` does not exist"),
    "bad-request": Failure(400, message="'temperature' must be at most 2"),
    "too-long": Failure(400, message="This model's maximum context length is 2048 tokens. However, you requested 3000 tokens",
                        code="context_length_exceeded"),
    "too-long-llama": Failure(400, message="Requested tokens (3000) exceed context window of 2048"),
    "reset": DROP,
}
TRANSIENT = {"rate-limited", "server-error", "unavailable", "reset", "refused", "timeout"}
FATAL = {"unauthorized", "forbidden", "no-such-model", "refused"}
OVERFLOW = {"too-long", "too-long-llama", "too-long-in-process"}


def _refused_url() -> str:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _raised(model: str, api_base: str, engine: str, **kwargs) -> Exception:
    lm = dspy.LM(f"openai/{model}", api_base=api_base, engine=engine, num_retries=0, cache=False, **kwargs)
    with dspy.context(lm=lm):
        with pytest.raises(Exception) as info:
            question_program("Is it about money?", ["yes", "no"])(text="I was charged twice")
    return info.value


class _TooLong:
    """A custom engine failing as llama-cpp-python does in process when the prompt exceeds n_ctx."""

    supports_response_schema = True
    supported_params = frozenset({"response_format", "temperature", "max_tokens", "logprobs", "top_logprobs"})

    def complete(self, request):
        raise ValueError("Requested tokens (3000) exceed context window of 2048")

    def close(self):
        pass


@pytest.fixture(scope="module", params=["auto", "litellm"])
def raised(request) -> dict[str, Exception]:
    """Failure kind -> the exception a labelloop program call raised for it, per DSPy engine."""
    monkey = pytest.MonkeyPatch()
    monkey.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    engine = request.param
    try:
        with FakeOpenAIServer(fail=lambda n, body: FAILURES.get(body["model"])) as server:
            found = {kind: _raised(kind, server.url, engine) for kind in FAILURES}
        with FakeOpenAIServer(delay=1.0) as slow:
            found["timeout"] = _raised("slow", slow.url, engine, timeout=0.2)
        found["refused"] = _raised("fake", _refused_url(), engine)
        with FakeOpenAIServer(answer=lambda body: "no JSON here") as garbage:
            lm = dspy.LM("openai/fake", api_base=garbage.url, engine=engine, num_retries=0, cache=False)
            with dspy.context(lm=lm, adapter=dspy.JSONAdapter()), pytest.raises(Exception) as info:
                dspy.Predict("text -> answer")(text="x")
            found["unparsable"] = info.value
    finally:
        monkey.undo()
    lm = dspy.LM("llamacpp/fake", engine=_TooLong(), cache=False, num_retries=0)
    with dspy.context(lm=lm), pytest.raises(Exception) as info:
        question_program("Is it about money?", ["yes", "no"])(text="x")
    found["too-long-in-process"] = info.value
    return found


def test_the_exceptions_are_dspys_public_errors(raised):
    """What the classifiers see first: DSPy's LMError subclasses (the fixture would hide a plain success)."""
    expected = {"rate-limited": dx.LMRateLimitError, "server-error": dx.LMServerError, "unauthorized": dx.LMAuthError,
                "forbidden": dx.LMAuthError, "no-such-model": dx.LMUnsupportedModelError,
                "bad-request": dx.LMInvalidRequestError, "too-long": dx.ContextWindowExceededError,
                "too-long-in-process": dx.LMUnexpectedError, "unparsable": dx.AdapterParseError}
    for kind, cls in expected.items():
        assert isinstance(raised[kind], cls), (kind, type(raised[kind]))
    assert isinstance(raised["too-long-in-process"].__cause__, ValueError)


@pytest.mark.parametrize("kind", [*FAILURES, "timeout", "refused", "unparsable", "too-long-in-process"])
def test_classification(raised, kind):
    exc = raised[kind]
    assert is_transient(exc) == (kind in TRANSIENT), (kind, type(exc), exc.__cause__)
    assert is_fatal(exc) == (kind in FATAL), (kind, type(exc))
    assert is_context_overflow(exc) == (kind in OVERFLOW), (kind, type(exc))


def test_retry_after_comes_from_the_servers_header(raised):
    assert retry_after(raised["rate-limited"]) == 7.0
    assert retry_after(raised["server-error"]) is None


def test_retry_after_reads_an_http_date_on_an_sdk_error():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    response = httpx.Response(429, headers={"Retry-After": when}, request=httpx.Request("POST", "http://127.0.0.1/v1"))
    exc = openai.RateLimitError("slow down", response=response, body=None)
    assert 25 <= retry_after(exc) <= 30
    assert is_transient(exc) and not is_fatal(exc)


class _Flaky:
    """Raises the given exceptions in turn, then returns "ok"; counts calls."""

    def __init__(self, *errors: Exception):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_transient_errors_back_off_exponentially_with_jitter(raised):
    slept: list[float] = []
    fn = _Flaky(raised["server-error"], raised["reset"], raised["timeout"])
    assert call_with_retries(fn, attempts=4, base_delay=1.0, sleep=slept.append) == "ok"
    assert fn.calls == 4 and len(slept) == 3
    for i, delay in enumerate(slept):  # base * 2**i, half of it random
        assert 2**i / 2 <= delay <= 2**i


def test_retry_after_is_honoured_and_capped(raised):
    slept: list[float] = []
    call_with_retries(_Flaky(raised["rate-limited"]), sleep=slept.append)
    assert slept == [7.0]
    slept.clear()
    call_with_retries(_Flaky(raised["rate-limited"]), max_delay=2.0, sleep=slept.append)
    assert slept == [2.0]


def test_attempts_are_bounded_and_the_last_error_is_raised(raised):
    slept: list[float] = []
    last = raised["unavailable"]
    fn = _Flaky(raised["server-error"], raised["server-error"], last, raised["server-error"])
    with pytest.raises(type(last)) as info:
        call_with_retries(fn, attempts=3, base_delay=0.01, max_delay=0.01, sleep=slept.append)
    assert info.value is last and fn.calls == 3 and len(slept) == 2
    assert all(0.005 <= d <= 0.01 for d in slept)  # capped by max_delay, jitter kept


@pytest.mark.parametrize("kind", ["unauthorized", "bad-request", "no-such-model", "too-long", "unparsable"])
def test_non_transient_errors_are_raised_at_once(raised, kind):
    slept: list[float] = []
    fn = _Flaky(raised[kind])
    with pytest.raises(type(raised[kind])):
        call_with_retries(fn, attempts=5, sleep=slept.append)
    assert fn.calls == 1 and slept == []


def test_one_attempt_means_no_retry(raised):
    with pytest.raises(type(raised["server-error"])):
        call_with_retries(_Flaky(raised["server-error"]), attempts=1, sleep=pytest.fail)
    with pytest.raises(ValueError, match="at least 1"):
        call_with_retries(_Flaky(), attempts=0)


def test_a_program_call_survives_a_429_and_a_500(monkeypatch):
    """End to end: DSPy makes one request per try (num_retries=0), labelloop's loop makes the rest."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    slept: list[float] = []
    program = question_program("Is it about money?", ["yes", "no"])
    with FakeOpenAIServer(fail={1: Failure(429, retry_after=0), 2: Failure(500)}) as server:
        with dspy.context(lm=dspy.LM("openai/fake", api_base=server.url, num_retries=0, cache=False)):
            pred = call_with_retries(lambda: program(text="I was charged twice"), base_delay=0.01, sleep=slept.append)
    assert pred.answer == "yes" and pred.probs["yes"] == pytest.approx(0.8)
    assert server.requests == 3 and slept[0] == 0.0 and len(slept) == 2


def test_make_lm_leaves_retries_to_labelloop_and_passes_the_timeout(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with FakeOpenAIServer(fail={1: Failure(500)}) as server:
        spec = LMSpec(model="openai/fake", api_base=server.url, timeout_s=7.5, retries=5)
        lm = spec.make()
        assert lm.num_retries == 0 and lm.kwargs["timeout"] == 7.5
        with dspy.context(lm=lm), pytest.raises(dx.LMServerError):
            question_program("Is it about money?", ["yes", "no"])(text="I was charged twice")
        assert server.requests == 1  # DSPy did not retry on its own
        assert spec.key() == LMSpec(model="openai/fake", api_base=server.url).key()  # speed settings are not identity
