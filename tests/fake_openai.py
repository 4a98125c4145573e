"""A real OpenAI-compatible HTTP server on loopback for tests: counts requests, injects failures, answers like fakes.py.

Unlike the engine fake (``tests.fakes.RuleEngine``), this exercises the whole hosted path: DSPy's
native OpenAI client, HTTP, concurrency, errors and retries. It runs in a background thread of the
test process and may be called from any process on the machine (a served Prefect flow, say).

    with FakeOpenAIServer(delay=0.2, fail={1: Failure(429, retry_after=0)}) as server:
        config["lm"] = {"model": "openai/fake-model", "api_base": server.url}
        ...
        assert server.requests == 5 and server.max_in_flight <= 4
"""

from __future__ import annotations

import ast
import json
import math
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.fakes import default_answer

CONFIDENCE = 0.8  # the probability the default answer's chosen option gets, as in tests.fakes.RuleEngine


@dataclass(frozen=True)
class Failure:
    """How one request fails: an HTTP ``status`` (with an optional Retry-After in seconds, error message and OpenAI
    error code such as ``context_length_exceeded``), or ``status=None``: the connection is reset without an answer."""

    status: int | None = 500
    retry_after: float | None = None
    message: str | None = None
    code: str | None = None


DROP = Failure(status=None)

# fail: {request number: outcome}, or a callable (request number, request JSON) -> outcome or None (answer normally).
# An outcome is a Failure or a bare status code. Request numbers count chat completions from 1.
FailSpec = Mapping[int, "Failure | int"] | Callable[[int, dict], "Failure | int | None"]


def _output_fields(request: dict) -> dict[str, tuple[bool, list[str] | None]]:
    """Output field -> (is a list, allowed options or None), from the JSON schema or else DSPy's system message."""
    fmt = request.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
    if schema:
        fields = {}
        for name, spec in schema.get("properties", {}).items():
            is_list = spec.get("type") == "array"
            fields[name] = (is_list, (spec.get("items") or {}).get("enum") if is_list else spec.get("enum"))
        return fields
    system = next((m.get("content") or "" for m in request.get("messages", []) if m.get("role") == "system"), "")
    section = system.split("Your output fields are:", 1)[-1].split("All interactions", 1)[0]
    fields = {}
    for name, kind in re.findall(r"^\d+\. `(\w+)` \((.+?)\)(?::|$)", section, flags=re.M):
        literal = re.search(r"Literal\[(.*)\]", kind)
        options = list(ast.literal_eval(f"[{literal.group(1)}]")) if literal else None
        fields[name] = (kind.startswith("list["), options)
    return fields


def _record_text(request: dict) -> str:
    """The record's text from the last user message (DSPy's ``[[ ## text ## ]]`` field), lower-cased like fakes.py."""
    content = next((m.get("content") or "" for m in reversed(request.get("messages", [])) if m.get("role") == "user"), "")
    if isinstance(content, list):  # content parts
        content = "".join(part.get("text", "") for part in content)
    text = content.split("[[ ## text ## ]]", 1)[-1]
    body, _, tail = text.rpartition("\n\n")
    return (body if tail.startswith("Respond with") else text).strip().lower()


def dspy_answer(request: dict) -> str:
    """The assistant content for a DSPy request, decided by ``tests.fakes.default_answer``'s keyword rules.

    JSON-adapter requests get a JSON object; chat-adapter requests get ``[[ ## field ## ]]`` sections.
    """
    fields = _output_fields(request)
    text = _record_text(request)
    answers = {name: default_answer(name, options, text) for name, (_, options) in fields.items()}
    system = next((m.get("content") or "" for m in request.get("messages", []) if m.get("role") == "system"), "")
    if request.get("response_format") or "JSON object" in system:
        return json.dumps(answers)
    sections = [f"[[ ## {name} ## ]]\n{json.dumps(v) if isinstance(v, list) else v}" for name, v in answers.items()]
    return "\n\n".join([*sections, "[[ ## completed ## ]]"])


def _logprobs(content: str, request: dict, top_n: int) -> dict:
    """OpenAI-style ``choices[0].logprobs``: a single-choice JSON answer is split so its value is one token whose
    alternatives are the other options (as ``option_probabilities`` reads them); any other content is one token."""
    def token(text: str, logprob: float, top: list[tuple[str, float]] = ()) -> dict:
        alts = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top[:top_n]]
        return {"token": text, "logprob": logprob, "bytes": list(text.encode()), "top_logprobs": alts}

    try:
        parsed = json.loads(content)
    except ValueError:
        parsed = None
    options = {name: opts for name, (is_list, opts) in _output_fields(request).items() if opts and not is_list}
    if isinstance(parsed, dict) and len(parsed) == 1:
        (field, value), = parsed.items()
        prefix = f'{{"{field}": "'
        if value in options.get(field, ()) and content == json.dumps(parsed):
            others = [o for o in options[field] if o != value]
            rest = math.log((1 - CONFIDENCE) / len(others)) if others else 0.0
            top = [(value, math.log(CONFIDENCE))] + [(o, rest) for o in others]
            return {"content": [token(prefix, 0.0), token(value, top[0][1], top), token('"}', 0.0)]}
    return {"content": [token(content, 0.0)]}


class FakeOpenAIServer:
    """``/v1/chat/completions`` and ``/v1/models`` on 127.0.0.1, a free port, in a background thread.

    Args:
        answer: ``request JSON -> assistant content``; default ``dspy_answer`` (keyword rules).
        delay: seconds each chat completion takes (while it counts as in flight).
        fail: which requests fail and how (see ``FailSpec``); failed requests are counted too.

    Attributes (thread-safe): ``requests`` (chat completions received), ``answered`` (answers sent in
    full: what a client was billed for), ``max_in_flight`` (most at once), ``bodies`` (their JSON),
    ``authorization`` (each one's Authorization header).
    """

    def __init__(self, answer: Callable[[dict], str] | None = None, *, delay: float = 0.0, fail: FailSpec | None = None):
        self.answer = answer or dspy_answer
        self.delay = delay
        self.fail = fail
        self.requests = 0
        self.answered = 0
        self.max_in_flight = 0
        self.bodies: list[dict] = []
        self.authorization: list[str | None] = []
        self._in_flight = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        """The api_base: ``http://127.0.0.1:PORT/v1`` (kept after ``stop()``, for messages and configs)."""
        if self._port is None:
            raise RuntimeError("FakeOpenAIServer is not started")
        return f"http://127.0.0.1:{self._port}/v1"

    def start(self) -> FakeOpenAIServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _admit(self, body: dict, authorization: str | None) -> int:
        with self._lock:
            self.requests += 1
            self.bodies.append(body)
            self.authorization.append(authorization)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            return self.requests

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _failure(self, number: int, body: dict) -> Failure | None:
        if self.fail is None:
            return None
        outcome = self.fail(number, body) if callable(self.fail) else self.fail.get(number)
        return Failure(outcome) if isinstance(outcome, int) else outcome


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not block stop()

    def handle_error(self, request, client_address) -> None:
        """A client that gave up (its timeout) is expected here; anything else is printed as usual."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers: clients pool connections
    fake: FakeOpenAIServer

    def log_message(self, format, *args) -> None:  # quiet: tests read capsys
        pass

    def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "tests"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        fake = self.fake
        number = fake._admit(body, self.headers.get("Authorization"))
        try:
            if fake.delay:
                time.sleep(fake.delay)
            failure = fake._failure(number, body)
            if failure is not None and failure.status is None:
                self._reset()
            elif failure is not None:
                headers = {} if failure.retry_after is None else {"Retry-After": f"{failure.retry_after:g}"}
                message = failure.message or f"injected failure {failure.status}"
                error = {"message": message, "type": "error", "code": failure.code}
                self._send(failure.status, {"error": error}, headers)
            else:
                try:
                    completion = self._completion(body)
                except Exception as exc:  # a broken answer function shows up in the client's error, not as a hang-up
                    self._send(500, {"error": {"message": f"fake answer failed: {exc!r}", "type": "error", "code": None}})
                else:
                    self._send(200, completion)
                    with fake._lock:
                        fake.answered += 1
        finally:
            fake._leave()

    def _reset(self) -> None:
        """Close the connection with a TCP reset and no response, as a crashed server or a proxy would."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.rfile.close()
        self.connection.close()

    def _completion(self, body: dict) -> dict:
        content = self.fake.answer(body)
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop", "logprobs": None}
        if body.get("logprobs"):
            choice["logprobs"] = _logprobs(content, body, int(body.get("top_logprobs") or 1))
        prompt_chars = sum(len(str(m.get("content") or "")) for m in body.get("messages", []))
        usage = {"prompt_tokens": prompt_chars // 4, "completion_tokens": max(1, len(content) // 4)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return {"id": f"chatcmpl-{self.fake.requests}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "fake-model"), "choices": [choice], "usage": usage}


def answered_by(config_path, url: str, *, keep: int | tuple[int, int, int] | None = None, **lm):
    """Point a copy of the example project at ``url`` (its ``lm:`` block, plus ``lm`` settings); returns the config path.

    ``keep``: only the first lines of records, dev and test (one number for all three, or three).
    """
    from pathlib import Path

    import yaml

    config_path = Path(config_path)
    config = yaml.safe_load(config_path.read_text())
    config["lm"] = {"model": "openai/fake-model", "api_base": url, **lm}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    if keep is not None:
        counts = keep if isinstance(keep, tuple) else (keep,) * 3
        for name, n in zip(("records.jsonl", "dev.jsonl", "test.jsonl"), counts):
            path = config_path.parent / name
            path.write_text("".join(path.read_text().splitlines(keepends=True)[:n]))
    return config_path


def calls_to_make(config_path) -> int:
    """The LLM calls a run of this project would make now (``labelloop.plan``'s total)."""
    import labelloop

    return sum(row["llm_calls"] for row in labelloop.plan(labelloop.load_project(config_path)))
