"""A trained student over HTTP: ``POST /predict``, ``GET /health``, ``GET /metadata`` (``labelloop serve``).

The model is loaded once, when the app is made; a request runs the student's ``predict_proba`` on
its texts and returns, per text, the label (multi-label: the labels and the most probable one), its
confidence, whether it abstains at the run's threshold (or the request's), and every label's
probability. Requests are bounded before any work is done: the body's size (413, from
``Content-Length`` and from the bytes that actually arrive), the number of texts (413) and each
text's length in characters (422). Every error answers ``{"detail": "<one line>"}``.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations, and the request
# model is made per app (its limits), inside make_app, where a string annotation could not be resolved.
import json
import math
import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints

from labelloop.flows.predict import Student, load_model
from labelloop.programs.errors import ConfigError

MAX_BATCH = 256  # texts per request
MAX_TEXT_CHARS = 20_000  # characters per text
MAX_BODY_BYTES = 4 * 1024 * 1024  # bytes per request body
ENVIRONMENT = "LABELLOOP_SERVE"  # JSON {"model": ..., limits}: how `--workers N` hands the app to each process
MAX_MESSAGES = 5  # validation problems named in one error's detail


class Error(BaseModel):
    """What every error answers: one line that says what was expected and what arrived."""

    detail: str = Field(description="what was wrong with the request")
    errors: list[dict[str, Any]] | None = Field(None, description="validation errors: loc, msg, type (422 only)")


class Health(BaseModel):
    status: str = "ok"


class MulticlassPrediction(BaseModel):
    label: str = Field(description="the most probable label (given even when the prediction abstains)")
    confidence: float = Field(description="its calibrated probability")
    abstain: bool = Field(description="true: the confidence is under the threshold; treat the label as unsure")
    probabilities: dict[str, float] = Field(description="every label's calibrated probability (they sum to 1)")


class MultilabelPrediction(BaseModel):
    labels: list[str] = Field(description="the labels at or above their thresholds")
    top_label: str = Field(description="the most probable label")
    confidence: float = Field(description="its probability")
    abstain: bool = Field(description="true: no label reaches its threshold")
    probabilities: dict[str, float] = Field(description="every label's probability (independent, one per label)")


class MulticlassResponse(BaseModel):
    predictions: list[MulticlassPrediction] = Field(description="one per text, in the order sent")
    threshold: float = Field(description="the confidence a prediction needed not to abstain")
    model_sha256: str = Field(description="SHA-256 of the model file that answered")


class MultilabelResponse(BaseModel):
    predictions: list[MultilabelPrediction] = Field(description="one per text, in the order sent")
    threshold: list[float] = Field(description="the probability each label needed, in the model's label order")
    model_sha256: str = Field(description="SHA-256 of the model file that answered")


def _error(status: int, detail: str, **extra) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status)


def _finite(value):
    """``value`` with every NaN or infinity replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class BodyLimit:
    """ASGI middleware: refuse a request body over ``max_bytes`` (413) before anything parses it.

    A ``Content-Length`` over the limit is refused at once; a body without one (chunked) is read
    up to the limit and refused as soon as it passes it. A body within the limit is handed on whole.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self, size: str) -> JSONResponse:
        return _error(413, f"the request body is {size} bytes; this server accepts at most {self.max_bytes} "
                           "(max_body_bytes): send fewer or shorter texts per request")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return await _error(400, f"Content-Length is not a number: {value[:40].decode('latin-1')!r}")(
                        scope, receive, send)
                if length > self.max_bytes:
                    return await self._too_large(str(length))(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._too_large(f"more than {self.max_bytes}")(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, pending = b"".join(chunks), True

        async def replay():
            nonlocal pending
            if pending:
                pending = False
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _where(loc) -> str:
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else ("." if out else "") + part
    return out or "the body"


def _describe(error: dict, max_batch: int, max_text_chars: int) -> str:
    """One validation error as a sentence that names the limit and what arrived."""
    kind, loc, where = error.get("type"), tuple(error.get("loc", ())), _where(error.get("loc", ()))
    value = error.get("input")
    if kind == "too_long" and loc[-1:] == ("texts",):
        count = len(value) if isinstance(value, list) else (error.get("ctx") or {}).get("actual_length")
        return (f"{count} texts in one request; this server accepts at most {max_batch} (max_batch): "
                "send them in smaller batches")
    if kind == "too_short" and loc[-1:] == ("texts",):
        return "texts is empty: send at least one text"
    if kind == "string_too_long":
        return (f"{where} is {len(value) if isinstance(value, str) else 'too many'} characters long; this server "
                f"accepts at most {max_text_chars} (max_text_chars): shorten or split it")
    if kind == "string_type":
        return f"{where} must be a string, got {type(value).__name__ if value is not None else 'null'}"
    if kind == "missing":
        return f'{where} is missing: send {{"texts": ["a text", ...]}}'
    if kind == "json_invalid":
        return f"the body is not valid JSON ({(error.get('ctx') or {}).get('error', error.get('msg'))})"
    if kind == "model_attributes_type":
        return 'the body must be a JSON object: {"texts": ["a text", ...]}'
    return f"{where}: {error.get('msg')}"


def make_app(model: Student | Path | str, *, max_batch: int = MAX_BATCH, max_text_chars: int = MAX_TEXT_CHARS,
             max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The HTTP app for a trained student.

    Args:
        model: a loaded ``Student``, a run folder, or the ``model.skops`` inside one (loaded here, once).
        max_batch: most texts in one request (more: 413).
        max_text_chars: most characters in one text (more: 422, naming the text's index).
        max_body_bytes: largest request body (more: 413, before the body is parsed).

    Raises:
        ConfigError: the model is missing, not a labelloop student, or changed after training; a limit is not positive.
    """
    for name, value in (("max_batch", max_batch), ("max_text_chars", max_text_chars), ("max_body_bytes", max_body_bytes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive whole number, got {value!r}")
    if not isinstance(model, Student) and not Path(model).exists():
        raise ConfigError(f"{model} does not exist: expected a run folder or the model.skops inside one")
    student = model if isinstance(model, Student) else load_model(model)
    labels, task, default_threshold = student.labels, student.task, student.threshold
    multilabel = task.name == "multilabel"
    student.predict_proba(["warm up"])  # the first call pays for lazy set-up; no request should
    metadata = _finite(student.metadata())
    metadata["limits"] = {"max_batch": max_batch, "max_text_chars": max_text_chars, "max_body_bytes": max_body_bytes}
    sha256 = metadata["model_sha256"]

    Text = Annotated[str, StringConstraints(strict=True, max_length=max_text_chars)]

    class PredictRequest(BaseModel):
        texts: list[Text] = Field(min_length=1, max_length=max_batch,
                                  description=f"the texts to label: 1 to {max_batch}, each at most {max_text_chars} "
                                              "characters")
        threshold: float | None = Field(None, ge=0, allow_inf_nan=False,
                                        description="abstain below this confidence instead of the run's (0: never "
                                                    "abstain)" + ("; multi-label: one threshold for every label"
                                                                  if multilabel else ""))

        model_config = {"json_schema_extra": {"examples": [{"texts": ["I was charged twice, please refund me"]}]}}

    app = FastAPI(title=f"labelloop student: {metadata.get('name') or student.path.parent.name}",
                  version=str(metadata.get("labelloop_version")),
                  description=f"A {task.name} student over {len(labels)} labels: {', '.join(labels)}. "
                              f"Limits: {max_batch} texts per request, {max_text_chars} characters per text, "
                              f"{max_body_bytes} bytes per body.")
    app.state.student = student
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        status = 413 if any(e.get("type") == "too_long" and tuple(e.get("loc", ()))[-1:] == ("texts",)
                            for e in errors) else 422
        messages = [_describe(e, max_batch, max_text_chars) for e in errors]
        detail = "; ".join(messages[:MAX_MESSAGES])
        if len(messages) > MAX_MESSAGES:
            detail += f"; and {len(messages) - MAX_MESSAGES} more"
        # the inputs are left out: they may be long texts
        return _error(status, detail, errors=[{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                                              for e in errors[:100]])

    errors = {413: {"model": Error, "description": "the body or the batch is over its limit"},
              422: {"model": Error, "description": "the request is malformed or a text is too long"}}

    @app.post("/predict", response_model=MultilabelResponse if multilabel else MulticlassResponse, responses=errors)
    def predict(request: PredictRequest):
        """Label texts: per text, the label, its confidence, whether it abstains, and every label's probability."""
        texts = request.texts
        if request.threshold is None:
            threshold = default_threshold
        else:
            threshold = [request.threshold] * len(labels) if multilabel else request.threshold
        P = student.predict_proba(texts)
        columns = task.predictions(P, labels, threshold)
        probabilities = [dict(zip(labels, row)) for row in P.tolist()]
        confidence, abstain = columns["confidence"].tolist(), columns["abstain"].tolist()
        if multilabel:
            predictions = [{"labels": chosen, "top_label": top, "confidence": c, "abstain": a, "probabilities": p}
                           for chosen, top, c, a, p in zip(columns["labels"], columns["top_label"], confidence, abstain,
                                                           probabilities)]
            threshold = [float(t) for t in threshold]
        else:
            predictions = [{"label": label, "confidence": c, "abstain": a, "probabilities": p}
                           for label, c, a, p in zip(columns["label"], confidence, abstain, probabilities)]
            threshold = float(threshold)
        # returned as is: the response model documents the shape, the values are plain already
        return JSONResponse({"predictions": predictions, "threshold": threshold, "model_sha256": sha256})

    @app.get("/health", response_model=Health)
    def health():
        """Whether the server is up (the model was loaded when it started)."""
        return JSONResponse({"status": "ok"})

    @app.get("/metadata")
    def model_metadata() -> dict[str, Any]:
        """The model: labels, task, training facts, scores on gold, calibration, threshold, SHA-256, and this server's limits."""
        return JSONResponse(metadata)

    return app


def app_from_environment() -> FastAPI:
    """The app described by ``$LABELLOOP_SERVE`` (JSON: ``model`` and the limits): each ``--workers`` process makes its own."""
    settings = json.loads(os.environ[ENVIRONMENT])
    return make_app(settings.pop("model"), **settings)


def run_server(app: FastAPI, model: Path | str, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
               **limits) -> None:
    """Serve ``app`` with uvicorn until interrupted; with ``workers`` > 1, that many processes each load ``model``."""
    import uvicorn

    options = {"host": host, "port": port, "log_level": "warning", "access_log": False}
    if workers <= 1:
        uvicorn.run(app, **options)
        return
    os.environ[ENVIRONMENT] = json.dumps({"model": str(Path(model).resolve()), **limits})
    uvicorn.run(f"{__name__}:app_from_environment", factory=True, workers=workers, **options)


def server_url(host: str, port: int) -> str:
    """The address a client uses for a server listening on ``host``:``port`` (IPv6 in brackets)."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"
