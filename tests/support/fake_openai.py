"""A small OpenAI-compatible chat server for tests and benchmarks, with fault injection.

The judge stage talks to OpenAI-compatible chat servers through the official ``openai``
client; this server stands in for them on a machine without network access.  It is built
on aiohttp's web server (a widely used, well-kept asyncio HTTP library) so that thousands
of concurrent slow requests cost one event loop and almost no CPU.

Routes
    POST /v1/chat/completions   non-streaming ``chat.completion`` objects (``n``,
                                ``max_tokens``/``max_completion_tokens``, ``logprobs``)
    GET  /v1/models             one model
    POST /v1/files              upload (multipart ``file`` + ``purpose``), kept in memory
    GET  /v1/files/{id}         the file object;  GET /v1/files/{id}/content: its bytes
    POST /v1/batches            a batch of ``/v1/chat/completions`` requests from an uploaded JSONL file
    GET  /v1/batches/{id}       the batch (status, request counts, output and error file ids);
    GET  /v1/batches            newest first (``limit``, ``after``); POST /v1/batches/{id}/cancel
    anything else               404 (405 for a known path with the wrong method), with an
                                OpenAI-style body ``{"error": {"message", "type", "code"}}``

Answer policy (deterministic, from the LAST user message)
    Candidates appear as blocks ``<response id="ID">\\nTEXT\\n</response>``.  A TEXT's
    quality is 6 if it contains ``GOOD``, else 1 if it contains ``BAD``, else
    ``1 + sha256(TEXT) % 6`` (see :func:`quality`).

    * pairwise: the prompt contains ``Answer with A or B`` and exactly the blocks ``A`` and
      ``B`` -> ``"A"`` or ``"B"``, the higher quality wins and a tie goes to ``A`` (a
      deliberate position bias).  With ``logprobs: true`` the single answer token carries
      ``top_logprobs`` for "A" and "B" with P(winner) = sigmoid(quality difference)
      (tie: P(A) = 0.6).
    * rubric: blocks and no ``Answer with A or B`` -> a JSON object
      ``{"ID_justification": "...", "ID_score": quality, ...}`` for every ID in order.
    * single: the prompt contains ``Rating: [[`` and exactly one block -> ``"fake judge: ... Rating:
      [[G]]"`` with G = :func:`grade` of the block (a grade on 1..10); a text containing
      ``UNRATED`` gets ``"fake judge: fine, 7/10"`` (no ``[[G]]``: unparseable by design).
    * otherwise -> ``"ok: " + the first 40 characters of the prompt``.
    ``logprobs`` are only given for pairwise answers (``null`` otherwise).

Prefix cache (what providers bill at the cached-input price)
    ``usage.prompt_tokens_details.cached_tokens`` models OpenAI's automatic prompt caching: the
    messages' texts, joined, are counted in tokens of 4 characters (:func:`estimate_tokens`); a
    request's cached tokens are the longest prefix of ``prefix_cache_min_tokens`` (1024) plus a
    multiple of ``prefix_cache_block`` (128) tokens that an earlier request began with (0 below
    the minimum). Every prefix at those lengths is remembered (the last million; a provider's cache
    also forgets, after minutes, which this does not model, nor requests that share a prefix
    while the first is still in flight: here the first answered fills the cache).
    ``prefix_cache_min_tokens=0, prefix_cache_block=16`` models vLLM's prefix caching instead;
    ``prefix_cache_block=0`` turns it off (``cached_tokens`` 0).

Faults
    A script (a list of behaviours, consumed one per chat request, first) and then seeded
    rates pick one behaviour per chat request: ``ok``, ``429`` (``Retry-After`` header,
    type ``rate_limit_exceeded``), ``500`` (type ``server_error``), ``hang`` (sleep
    ``hang_seconds`` before answering), ``truncate`` (half the content, finish_reason
    ``length``), ``garbage`` (an unparseable refusal) or, by script only, ``empty`` (a 200
    answer with ``"choices": []``).  ``latency`` seconds are added to
    every request.  ``max_requests`` (every HTTP request counts) and ``max_seconds`` stop
    the server by itself; requests past ``max_requests`` get a 503.

Batches
    A batch is validated when created (every line JSON with a unique ``custom_id``, ``method``
    POST and the batch's ``url``; at most ``batch_max_requests`` lines and ``batch_max_bytes``
    bytes, the API's 50,000 and 200 MB by default); a file that breaks a rule makes a batch
    that ``failed`` with ``errors``.  ``batch_delay`` seconds after its creation every line runs
    as a chat request would (each line takes the next behaviour of the script and rates: a 429
    or 500 line goes to the error file with that ``status_code``, ``garbage``, ``truncate`` and
    ``empty`` answer as in chat), and the batch is ``completed`` with an output and an error
    file.  A batch script (``batch_script``, one entry per created batch, first) picks other
    ends: ``expire`` runs the first half of the lines and then expires (the rest in the error
    file with code ``batch_expired``), ``fail`` fails validation.  ``batch_create_delay``
    seconds pass between a batch's creation and the answer to the request that created it
    (a client killed in between never learns the batch's id).  Batch lines count in
    ``batch_requests`` and, per ``custom_id``, in ``batch_custom_ids``; they are not chat requests.

Stats
    ``srv.stats`` is a snapshot: request counts by behaviour and status, the last
    ``keep_bodies`` request bodies and the last ``Authorization`` header seen.  Nothing is
    logged and nothing is written to disk.

In-process (tests, benchmarks)::

    from support.fake_openai import FakeOpenAIServer   # in tests (tests/ is on sys.path)
    with FakeOpenAIServer(latency=0.2, error_429_rate=0.1, script=["500"], max_seconds=60) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="sk-test")
        ...
        srv.stats.by_status, srv.set_script(["hang"]), srv.configure(error_500_rate=0.0)

As a process (prints ``READY http://127.0.0.1:PORT/v1`` when listening; stops on
SIGTERM/SIGINT or at a limit, then prints a summary to stderr)::

    python -m tests.support.fake_openai --port 0 --latency 0.2 --error-429-rate 0.1 \\
        --error-500-rate 0.1 --retry-after 1 --hang-rate 0 --hang-seconds 30 \\
        --truncate-rate 0 --garbage-rate 0 --seed 0 --script 429,500,ok \\
        --max-requests 10000 --max-seconds 600

Its load benchmark is bench/bench_fake_server.py.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
import json
import math
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web

__all__ = [
    "BEHAVIOURS",
    "REFUSAL",
    "FakeOpenAIServer",
    "Stats",
    "answer_for",
    "cached_prefix_tokens",
    "estimate_tokens",
    "grade",
    "main",
    "pairwise_probability",
    "parse_blocks",
    "quality",
    "rubric_answer",
    "single_answer",
]

BEHAVIOURS = ("ok", "429", "500", "hang", "truncate", "garbage", "empty")
BATCH_BEHAVIOURS = ("ok", "expire", "fail")
BATCH_MAX_REQUESTS = 50_000  # the Batch API's limits on one input file
BATCH_MAX_BYTES = 200 * 1024 * 1024
BATCH_ENDPOINT = "/v1/chat/completions"
RATE_KEYS = ("error_429_rate", "error_500_rate", "hang_rate", "truncate_rate", "garbage_rate")
_RATE_BEHAVIOUR = dict(zip(RATE_KEYS, ("429", "500", "hang", "truncate", "garbage")))
REFUSAL = "I'm sorry, I can't help with that."
PAIRWISE_MARKER = "Answer with A or B"
SINGLE_MARKER = "Rating: [["
TIE_PROB_A = 0.6
_BLOCK_RE = re.compile(r'<response id="([A-Za-z0-9_-]+)"[^>]*>\n?(.*?)\n?</response>', re.S)


# ---------------------------------------------------------------- pure helpers


def parse_blocks(prompt: str) -> list[tuple[str, str]]:
    """The ``(id, text)`` candidate blocks of a prompt, in order.

    >>> parse_blocks('Rate:\\n<response id="A">\\nhi GOOD\\n</response>\\n<response id="b_2">\\nx\\ny\\n</response>')
    [('A', 'hi GOOD'), ('b_2', 'x\\ny')]
    >>> parse_blocks("no blocks here")
    []
    """
    return _BLOCK_RE.findall(prompt)


def quality(text: str) -> int:
    """The hidden quality (1..6) of a candidate text.

    >>> quality("a GOOD answer"), quality("a BAD answer"), quality("GOOD and BAD")
    (6, 1, 6)
    >>> quality("plain") == 1 + int(hashlib.sha256(b"plain").hexdigest(), 16) % 6
    True
    """
    if "GOOD" in text:
        return 6
    if "BAD" in text:
        return 1
    return 1 + int.from_bytes(hashlib.sha256(text.encode()).digest(), "big") % 6


def grade(text: str) -> int:
    """The single-answer grade (1..10) of a candidate text: 10 for GOOD, 1 for BAD, else from its hash.

    >>> grade("a GOOD answer"), grade("a BAD answer")
    (10, 1)
    """
    if "GOOD" in text:
        return 10
    if "BAD" in text:
        return 1
    return 1 + int.from_bytes(hashlib.sha256(text.encode()).digest(), "big") % 10


def single_answer(text: str) -> str:
    """A single-answer judge's grade of one text, MT-Bench's form; UNRATED gives a rating in another form.

    >>> single_answer("GOOD")
    'fake judge: quality as graded. Rating: [[10]]'
    >>> single_answer("UNRATED text")
    'fake judge: fine, 7/10'
    """
    if "UNRATED" in text:
        return "fake judge: fine, 7/10"
    return f"fake judge: quality as graded. Rating: [[{grade(text)}]]"


def rubric_answer(blocks: Iterable[tuple[str, str]]) -> str:
    """A rubric judge's JSON answer: a justification and a score per id, in order.

    >>> answer = json.loads(rubric_answer([("id1", "GOOD"), ("id2", "BAD")]))
    >>> list(answer), answer["id1_score"], answer["id2_score"]
    (['id1_justification', 'id1_score', 'id2_justification', 'id2_score'], 6, 1)
    """
    out: dict[str, object] = {}
    for bid, text in blocks:
        q = quality(text)
        out[f"{bid}_justification"] = f"fake judge: quality {q}"
        out[f"{bid}_score"] = q
    return json.dumps(out)


def pairwise_probability(qa: int, qb: int) -> float:
    """P("A") for qualities ``qa`` vs ``qb``: sigmoid of the winner's margin; a tie is 0.6.

    >>> pairwise_probability(6, 1) == 1 / (1 + math.exp(-5))
    True
    >>> pairwise_probability(1, 6) == 1 - 1 / (1 + math.exp(-5))
    True
    >>> pairwise_probability(3, 3)
    0.6
    """
    if qa == qb:
        return TIE_PROB_A
    p_winner = 1.0 / (1.0 + math.exp(-abs(qa - qb)))
    return p_winner if qa > qb else 1.0 - p_winner


def estimate_tokens(text: str) -> int:
    """Token estimate: ceil(characters / 4).

    >>> estimate_tokens(""), estimate_tokens("abcd"), estimate_tokens("abcde")
    (0, 1, 2)
    """
    return -(-len(text) // 4)


def cached_prefix_tokens(text: str, seen: dict, min_tokens: int = 1024, block: int = 128) -> int:
    """Tokens of ``text`` an earlier request's prefix covers (see the module's "Prefix cache"); records
    ``text``'s own prefixes in ``seen`` (a dict used as an ordered set, oldest first).

    >>> seen = {}
    >>> cached_prefix_tokens("x" * 4 * 1100, seen), cached_prefix_tokens("x" * 4 * 1300 + "y", seen)
    (0, 1024)
    >>> cached_prefix_tokens("x" * 4 * 1300 + "z", seen), cached_prefix_tokens("x" * 4 * 1000, seen)
    (1280, 0)
    >>> vllm = {}
    >>> cached_prefix_tokens("x" * 4 * 100, vllm, 0, 16), cached_prefix_tokens("x" * 4 * 90 + "y", vllm, 0, 16)
    (0, 80)
    """
    if block <= 0:
        return 0
    digest, pos, hit = hashlib.sha256(), 0, 0
    length = max(min_tokens, block)
    while 4 * length <= len(text):
        digest.update(text[pos:4 * length].encode())
        pos = 4 * length
        key = digest.digest()
        if key in seen:
            hit = length
        else:
            seen[key] = None
            if len(seen) > 1_000_000:
                del seen[next(iter(seen))]
        length += block
    return hit


def answer_for(prompt: str) -> tuple[str, str, float | None]:
    """``(content, mode, p_a)`` for a prompt; ``p_a`` is P("A") in pairwise mode, else None.

    >>> pair = 'Answer with A or B.\\n<response id="A">\\nBAD\\n</response>\\n<response id="B">\\nGOOD\\n</response>'
    >>> answer_for(pair)[:2]
    ('B', 'pairwise')
    >>> answer_for('<response id="x">\\nGOOD\\n</response>')[:2]
    ('{"x_justification": "fake judge: quality 6", "x_score": 6}', 'rubric')
    >>> answer_for("hello")
    ('ok: hello', 'echo', None)
    """
    blocks = parse_blocks(prompt) if "<response id=" in prompt else []
    if blocks:
        if SINGLE_MARKER in prompt and len(blocks) == 1:
            return single_answer(blocks[0][1]), "single", None
        if PAIRWISE_MARKER in prompt:
            if len(blocks) == 2 and blocks[0][0] == "A" and blocks[1][0] == "B":
                p_a = pairwise_probability(quality(blocks[0][1]), quality(blocks[1][1]))
                return ("A" if p_a >= 0.5 else "B"), "pairwise", p_a
        else:
            return rubric_answer(blocks), "rubric", None
    return "ok: " + prompt[:40], "echo", None


def _text_of(content: object) -> str:
    """The text of a message's content: a string, or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _token_logprob(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


def _pairwise_logprobs(answer: str, p_a: float, top_k: int) -> dict:
    lp = {"A": math.log(p_a), "B": math.log1p(-p_a)}
    entry = _token_logprob(answer, lp[answer])
    order = ("A", "B") if lp["A"] >= lp["B"] else ("B", "A")
    # Both letters always appear once top_logprobs is asked for (so P sums to 1).
    entry["top_logprobs"] = [_token_logprob(t, lp[t]) for t in order] if top_k > 0 else []
    return {"content": [entry], "refusal": None}


def _error_body(message: str, type_: str, code: str | None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _check_rate(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def _check_behaviour(b: object) -> str:
    s = str(b).strip().lower()
    if s not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {b!r}; expected one of {', '.join(BEHAVIOURS)}")
    return s


# ---------------------------------------------------------------- server


@dataclass(frozen=True)
class Stats:
    """A snapshot of what the server saw."""

    requests: int  # every HTTP request accepted (all routes), up to max_requests
    chat_requests: int
    rejected: int  # requests past max_requests (answered 503)
    by_behaviour: dict[str, int]
    by_status: dict[int, int]
    in_flight: int
    max_in_flight: int
    bodies: list[dict] = field(repr=False)  # the last keep_bodies chat request bodies
    authorization: str | None = field(repr=False)  # the last Authorization header seen
    stop_reason: str | None = None
    files_uploaded: int = 0
    batches_created: int = 0
    batch_requests: int = 0  # lines of every created batch's input file
    batch_custom_ids: dict[str, int] = field(default_factory=dict, repr=False)  # how often each custom_id was submitted
    batch_statuses: dict[str, str] = field(default_factory=dict)  # batch id -> status

    def summary(self) -> dict:
        """Counts only: no bodies and no Authorization header (safe to print)."""
        return {
            "requests": self.requests,
            "chat_requests": self.chat_requests,
            "rejected": self.rejected,
            "by_behaviour": self.by_behaviour,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "max_in_flight": self.max_in_flight,
            "authorization_seen": self.authorization is not None,
            "stop_reason": self.stop_reason,
            "files_uploaded": self.files_uploaded,
            "batches_created": self.batches_created,
            "batch_requests": self.batch_requests,
        }


class FakeOpenAIServer:
    """An OpenAI-compatible fake chat server; a context manager runs it in a background thread.

    ``max_requests`` counts every HTTP request; ``max_seconds`` counts from the start.  Either
    limit stops the server by itself (in-flight requests get ``shutdown_timeout`` seconds).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "fake-judge",
        latency: float = 0.0,
        error_429_rate: float = 0.0,
        error_500_rate: float = 0.0,
        hang_rate: float = 0.0,
        truncate_rate: float = 0.0,
        garbage_rate: float = 0.0,
        retry_after: float = 1.0,
        hang_seconds: float = 30.0,
        seed: int = 0,
        script: Iterable[str] | None = None,
        max_requests: int | None = None,
        max_seconds: float | None = None,
        keep_bodies: int = 50,
        shutdown_timeout: float = 1.0,
        batch_delay: float = 0.0,
        batch_create_delay: float = 0.0,
        batch_script: Iterable[str] | None = None,
        batch_max_requests: int = BATCH_MAX_REQUESTS,
        batch_max_bytes: int = BATCH_MAX_BYTES,
        prefix_cache_min_tokens: int = 1024,
        prefix_cache_block: int = 128,
    ) -> None:
        if not ipaddress.ip_address("127.0.0.1" if host == "localhost" else host).is_loopback:
            raise ValueError(f"the fake server binds loopback addresses only, not {host!r}")
        self.host, self.port, self.model = host, int(port), model
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.shutdown_timeout = shutdown_timeout
        self.prefix_cache_min_tokens, self.prefix_cache_block = prefix_cache_min_tokens, prefix_cache_block
        self._prefixes: dict[bytes, None] = {}  # touched on the event loop's thread only
        self._lock = threading.Lock()
        self._rates = dict.fromkeys(RATE_KEYS, 0.0)
        self.latency = self.retry_after = self.hang_seconds = 0.0
        self.batch_delay = self.batch_create_delay = 0.0
        self.batch_max_requests, self.batch_max_bytes = int(batch_max_requests), int(batch_max_bytes)
        self._rng = random.Random(seed)
        self.configure(
            latency=latency,
            error_429_rate=error_429_rate,
            error_500_rate=error_500_rate,
            hang_rate=hang_rate,
            truncate_rate=truncate_rate,
            garbage_rate=garbage_rate,
            retry_after=retry_after,
            hang_seconds=hang_seconds,
            batch_delay=batch_delay,
            batch_create_delay=batch_create_delay,
        )
        self._script: deque[str] = deque()
        self.set_script(script or [])
        self._batch_script: deque[str] = deque()
        self.set_batch_script(batch_script or [])
        self._files: dict[str, dict] = {}  # id -> {"object": the file object, "content": bytes}
        self._batches: dict[str, dict] = {}  # id -> the batch object, in creation order
        self._batch_work: dict[str, tuple[list[dict], str]] = {}  # id -> (its lines, its end) until it runs
        self._files_uploaded = self._batches_created = self._batch_requests = self._batch_answers = 0
        self._batch_custom_ids: Counter[str] = Counter()
        # counters (mutated on the loop thread under _lock, read as snapshots)
        self._requests = self._chat = self._rejected = 0
        self._in_flight = self._max_in_flight = 0
        self._by_behaviour: Counter[str] = Counter()
        self._by_status: Counter[int] = Counter()
        self._bodies: deque[dict] = deque(maxlen=max(0, keep_bodies))
        self._authorization: str | None = None
        self._stop_reason: str | None = None
        # runtime
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._startup_error: BaseException | None = None
        self._created = int(time.time())

    # ------------------------------------------------------------ configuration

    def configure(self, **settings: float) -> None:
        """Change rates (``error_429_rate`` ...), ``latency``, ``retry_after``,
        ``hang_seconds`` or ``seed`` (reseeds the fault RNG) while running."""
        unknown = set(settings) - set(RATE_KEYS) - {"latency", "retry_after", "hang_seconds", "seed", "batch_delay",
                                                    "batch_create_delay"}
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        with self._lock:
            rates = dict(self._rates)
            for key in RATE_KEYS:
                if key in settings:
                    rates[key] = _check_rate(key, settings[key])
            if sum(rates.values()) > 1.0 + 1e-9:
                raise ValueError(f"fault rates add up to more than 1: {rates}")
            for key in ("latency", "retry_after", "hang_seconds", "batch_delay", "batch_create_delay"):
                if key in settings:
                    if float(settings[key]) < 0:
                        raise ValueError(f"{key} must be >= 0")
                    setattr(self, key, float(settings[key]))
            self._rates = rates
            self._rate_table = [(r, _RATE_BEHAVIOUR[k]) for k, r in rates.items() if r > 0]
            if "seed" in settings:
                self._rng = random.Random(settings["seed"])

    def set_script(self, script: Iterable[str]) -> None:
        """Replace the script: behaviours consumed one per chat request before rates apply."""
        items = [_check_behaviour(b) for b in script]
        with self._lock:
            self._script = deque(items)

    def set_batch_script(self, script: Iterable[str]) -> None:
        """Replace the batch script: ends (ok, expire, fail) consumed one per created batch."""
        items = []
        for b in script:
            b = str(b).strip().lower()
            if b not in BATCH_BEHAVIOURS:
                raise ValueError(f"unknown batch behaviour {b!r}; expected one of {', '.join(BATCH_BEHAVIOURS)}")
            items.append(b)
        with self._lock:
            self._batch_script = deque(items)

    def _pick_behaviour(self) -> str:
        with self._lock:
            if self._script:
                return self._script.popleft()
            table = self._rate_table
            u = self._rng.random() if table else 1.0
        acc = 0.0
        for rate, behaviour in table:
            acc += rate
            if u < acc:
                return behaviour
        return "ok"

    # ------------------------------------------------------------ stats

    @property
    def stats(self) -> Stats:
        with self._lock:
            return Stats(
                requests=self._requests,
                chat_requests=self._chat,
                rejected=self._rejected,
                by_behaviour=dict(self._by_behaviour),
                by_status=dict(self._by_status),
                in_flight=self._in_flight,
                max_in_flight=self._max_in_flight,
                bodies=list(self._bodies),
                authorization=self._authorization,
                stop_reason=self._stop_reason,
                files_uploaded=self._files_uploaded,
                batches_created=self._batches_created,
                batch_requests=self._batch_requests,
                batch_custom_ids=dict(self._batch_custom_ids),
                batch_statuses={k: b["status"] for k, b in self._batches.items()},
            )

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("the server is not listening yet")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    # ------------------------------------------------------------ request handling

    def _enter(self, request: web.Request) -> int | None:
        """Count a request; its serial number, or None when past max_requests."""
        auth = request.headers.get("Authorization")
        with self._lock:
            if auth is not None:
                self._authorization = auth
            if self.max_requests is not None and self._requests >= self.max_requests:
                self._rejected += 1
                self._by_status[503] += 1
                return None
            self._requests += 1
            self._in_flight += 1
            if self._in_flight > self._max_in_flight:
                self._max_in_flight = self._in_flight
            return self._requests

    def _leave(self, serial: int, status: int) -> None:
        with self._lock:
            self._in_flight -= 1
            self._by_status[status] += 1
        if self.max_requests is not None and serial == self.max_requests:
            self.request_stop("max_requests")

    @staticmethod
    def _limit_response() -> web.Response:
        return web.Response(
            status=503,
            body=_error_body("The fake server reached max_requests.", "server_error", "server_shutting_down"),
            content_type="application/json",
        )

    async def _handle(self, request: web.Request, inner: Callable) -> web.Response:
        """Count the request, run ``inner`` (-> status, body, headers) and answer it."""
        serial = self._enter(request)
        if serial is None:
            return self._limit_response()
        status = 499  # cancelled before an answer (client gone or server shutting down)
        try:
            status, body, headers = await inner(request)
            headers = dict(headers or {})
            content_type = headers.pop("Content-Type", "application/json")
            return web.Response(status=status, body=body, content_type=content_type, headers=headers or None)
        finally:
            self._leave(serial, status)

    async def _chat_completions(self, request: web.Request) -> web.Response:
        return await self._handle(request, self._chat_inner)

    async def _chat_inner(self, request: web.Request) -> tuple[int, bytes, dict | None]:
        raw = await request.read()
        behaviour = self._pick_behaviour()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self._lock:
            self._chat += 1
            chat_serial = self._chat
            self._by_behaviour[behaviour] += 1
            if self._bodies.maxlen:
                self._bodies.append(body if isinstance(body, dict) else {"_raw": raw[:1000].decode("utf-8", "replace")})
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if behaviour == "429":
            body_429 = _error_body("Rate limit reached (fake server).", "rate_limit_exceeded", "rate_limit_exceeded")
            return 429, body_429, {"Retry-After": _format_seconds(self.retry_after)}
        if behaviour == "500":
            msg = "The server had an error while processing your request (fake)."
            return 500, _error_body(msg, "server_error", "server_error"), None
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            msg = "Expected a JSON body with a non-empty 'messages' list."
            return 400, _error_body(msg, "invalid_request_error", "invalid_body"), None
        if body.get("stream"):
            msg = "Streaming is not supported by the fake server."
            return 400, _error_body(msg, "invalid_request_error", "unsupported_parameter"), None
        if behaviour == "hang" and self.hang_seconds > 0:
            await asyncio.sleep(self.hang_seconds)
        return 200, self._completion(body, behaviour, chat_serial), None

    def _completion(self, body: dict, behaviour: str, chat_serial: int) -> bytes:
        messages = body["messages"]
        texts = [_text_of(m.get("content")) if isinstance(m, dict) else "" for m in messages]
        prompt = ""
        for m, t in zip(reversed(messages), reversed(texts)):
            if isinstance(m, dict) and m.get("role") == "user":
                prompt = t
                break
        content, mode, p_a = answer_for(prompt)
        finish = "stop"
        if behaviour == "garbage":
            content, p_a = REFUSAL, None
        elif behaviour == "truncate":
            content, finish, p_a = content[: len(content) // 2], "length", None
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and limit > 0 and estimate_tokens(content) > limit:
            content, finish, p_a = content[: limit * 4], "length", None
        logprobs = None
        if body.get("logprobs") and p_a is not None and content in ("A", "B"):
            top_k = body.get("top_logprobs") or 0
            logprobs = _pairwise_logprobs(content, p_a, top_k if isinstance(top_k, int) else 0)
        n = body.get("n") or 1
        n = max(1, min(n if isinstance(n, int) else 1, 16))
        choice = {
            "message": {"role": "assistant", "content": content, "refusal": None},
            "finish_reason": finish,
            "logprobs": logprobs,
        }
        prompt_tokens = estimate_tokens("".join(texts))
        completion_tokens = n * estimate_tokens(content)
        cached = cached_prefix_tokens("".join(texts), self._prefixes, self.prefix_cache_min_tokens,
                                      self.prefix_cache_block)
        return json.dumps(
            {
                "id": f"chatcmpl-fake-{chat_serial}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model") if isinstance(body.get("model"), str) else self.model,
                "system_fingerprint": "fake_openai",
                "choices": [] if behaviour == "empty" else [{"index": i, **choice} for i in range(n)],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "prompt_tokens_details": {"cached_tokens": cached},
                },
            }
        ).encode()

    async def _models(self, request: web.Request) -> web.Response:
        return await self._handle(request, self._models_inner)

    async def _models_inner(self, request: web.Request) -> tuple[int, bytes, dict | None]:
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        body = {
            "object": "list",
            "data": [{"id": self.model, "object": "model", "created": self._created, "owned_by": "dno-fake"}],
        }
        return 200, json.dumps(body).encode(), None

    # ------------------------------------------------------------ files and batches

    async def _file_upload(self, request: web.Request) -> tuple[int, bytes, dict | None]:
        try:
            form = await request.post()
        except (ValueError, web.HTTPException):
            form = {}
        upload, purpose = form.get("file"), form.get("purpose")
        if not hasattr(upload, "file") or not isinstance(purpose, str):
            msg = "Expected a multipart body with 'file' and 'purpose'."
            return 400, _error_body(msg, "invalid_request_error", "invalid_body"), None
        content = upload.file.read()
        with self._lock:
            self._files_uploaded += 1
            fid = f"file-fake{self._files_uploaded:04d}{uuid.uuid4().hex[:8]}"
            obj = {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                   "filename": upload.filename or "upload", "purpose": purpose, "status": "processed"}
            self._files[fid] = {"object": obj, "content": content}
        return 200, json.dumps(obj).encode(), None

    def _file_or_404(self, fid: str) -> dict | None:
        with self._lock:
            return self._files.get(fid)

    async def _file_get(self, request: web.Request) -> tuple[int, bytes, dict | None]:
        f = self._file_or_404(request.match_info["id"])
        if f is None:
            return 404, _error_body("No such File object.", "invalid_request_error", "not_found"), None
        return 200, json.dumps(f["object"]).encode(), None

    async def _file_content(self, request: web.Request) -> tuple[int, bytes, dict | None]:
        f = self._file_or_404(request.match_info["id"])
        if f is None:
            return 404, _error_body("No such File object.", "invalid_request_error", "not_found"), None
        return 200, f["content"], {"Content-Type": "application/octet-stream"}

    async def _batch_create(self, request: web.Request) -> tuple[int, bytes, dict | None]:
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("input_file_id"), str):
            return 400, _error_body("Expected input_file_id.", "invalid_request_error", "invalid_body"), None
        if body.get("endpoint") != BATCH_ENDPOINT or body.get("completion_window") != "24h":
            msg = f"This server batches {BATCH_ENDPOINT} with completion_window 24h only."
            return 400, _error_body(msg, "invalid_request_error", "invalid_value"), None
        f = self._file_or_404(body["input_file_id"])
        if f is None or f["object"]["purpose"] != "batch":
            msg = "No such File object with purpose 'batch'."
            return 400, _error_body(msg, "invalid_request_error", "invalid_file"), None
        lines, error = self._batch_lines(f["content"])
        now = int(time.time())
        with self._lock:
            end = self._batch_script.popleft() if self._batch_script else "ok"
            self._batches_created += 1
            bid = f"batch_fake{self._batches_created:04d}{uuid.uuid4().hex[:8]}"
            batch = {"id": bid, "object": "batch", "endpoint": BATCH_ENDPOINT, "errors": None,
                     "input_file_id": body["input_file_id"], "completion_window": "24h", "status": "validating",
                     "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
                     "expires_at": now + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
                     "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                     "request_counts": {"total": 0, "completed": 0, "failed": 0},
                     "metadata": body.get("metadata")}
            self._batches[bid] = batch
            if error is None and end != "fail":
                self._batch_requests += len(lines)
                self._batch_custom_ids.update(line["custom_id"] for line in lines)
                batch.update(status="in_progress", in_progress_at=now)
                batch["request_counts"]["total"] = len(lines)
            else:
                why = error or {"code": "invalid_request", "message": "The batch failed validation (fake).",
                                "param": None, "line": 1}
                batch.update(status="failed", failed_at=now, errors={"object": "list", "data": [why]})
        if batch["status"] == "in_progress":
            self._batch_work[bid] = (lines, end)
            self._loop.call_later(self.batch_delay, self._run_batch, bid)
        if self.batch_create_delay > 0:
            await asyncio.sleep(self.batch_create_delay)
        with self._lock:
            return 200, json.dumps(batch).encode(), None

    def _batch_lines(self, content: bytes) -> tuple[list[dict], dict | None]:
        """The request lines of an input file, or the validation error of the batch it would make."""
        def error(message: str, line: int | None = None) -> tuple[list[dict], dict]:
            return [], {"code": "invalid_request", "message": message, "param": None, "line": line}

        if len(content) > self.batch_max_bytes:
            return error(f"The input file is larger than {self.batch_max_bytes} bytes.")
        lines, seen = [], set()
        for n, raw in enumerate(content.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                return error("This line is not valid JSON.", n)
            if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str) or not isinstance(
                    line.get("body"), dict):
                return error("A line needs a custom_id and a body.", n)
            if line.get("method") != "POST" or line.get("url") != BATCH_ENDPOINT:
                return error(f"A line's method must be POST and its url {BATCH_ENDPOINT}.", n)
            if line["custom_id"] in seen:
                return error(f"Duplicate custom_id {line['custom_id']!r}.", n)
            seen.add(line["custom_id"])
            lines.append(line)
        if not lines:
            return error("The input file holds no requests.")
        if len(lines) > self.batch_max_requests:
            return error(f"The input file holds more than {self.batch_max_requests} requests.")
        return lines, None

    def _new_file(self, content: bytes, name: str, purpose: str) -> str:
        """An output file of the server's (called under the lock)."""
        fid = f"file-fakeout{uuid.uuid4().hex[:12]}"
        self._files[fid] = {"object": {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                                       "filename": name, "purpose": purpose, "status": "processed"},
                            "content": content}
        return fid

    def run_batch_now(self, bid: str, timeout: float = 10.0) -> None:
        """End a batch now rather than batch_delay after its creation (safe from any thread)."""
        done = threading.Event()

        def run() -> None:
            self._run_batch(bid)
            done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(timeout):
            raise TimeoutError(f"batch {bid} did not run in time")

    def _run_batch(self, bid: str) -> None:
        """Every line of a batch, as chat requests would be answered; then the batch's end."""
        with self._lock:
            batch = self._batches[bid]
            if batch["status"] != "in_progress":  # cancelled, or already run
                return
            lines, end = self._batch_work.pop(bid)
        run = lines if end == "ok" else lines[: len(lines) // 2]
        out, err = [], []
        for i, line in enumerate(lines):
            rid = f"batch_req_{bid}_{i}"
            if i >= len(run):
                err.append({"id": rid, "custom_id": line["custom_id"], "response": None,
                            "error": {"code": "batch_expired", "message": "This request could not be executed "
                                      "before the completion window expired."}})
                continue
            behaviour = self._pick_behaviour()
            with self._lock:
                self._by_behaviour[behaviour] += 1
            body = line["body"]
            if behaviour in ("429", "500"):
                status = int(behaviour)
                msg = "Rate limit reached (fake server)." if status == 429 else "The server had an error (fake)."
                kind = "rate_limit_exceeded" if status == 429 else "server_error"
                err.append({"id": rid, "custom_id": line["custom_id"], "error": None,
                            "response": {"status_code": status, "request_id": rid,
                                         "body": json.loads(_error_body(msg, kind, kind))}})
            elif not isinstance(body.get("messages"), list) or not body["messages"]:
                err.append({"id": rid, "custom_id": line["custom_id"], "error": None,
                            "response": {"status_code": 400, "request_id": rid, "body": json.loads(_error_body(
                                "Expected a non-empty 'messages' list.", "invalid_request_error", "invalid_body"))}})
            else:
                with self._lock:
                    self._batch_answers += 1
                    serial = self._batch_answers
                answer = json.loads(self._completion(body, behaviour, serial))
                answer["id"] = f"chatcmpl-fake-batch-{serial}"
                out.append({"id": rid, "custom_id": line["custom_id"], "error": None,
                            "response": {"status_code": 200, "request_id": rid, "body": answer}})
        now = int(time.time())
        with self._lock:
            if batch["status"] != "in_progress":
                return
            if out:
                batch["output_file_id"] = self._new_file(b"".join(json.dumps(o).encode() + b"\n" for o in out),
                                                         f"{bid}_output.jsonl", "batch_output")
            if err:
                batch["error_file_id"] = self._new_file(b"".join(json.dumps(e).encode() + b"\n" for e in err),
                                                        f"{bid}_error.jsonl", "batch_output")
            batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}
            if end == "expire":
                batch.update(status="expired", expired_at=now)
            else:
                batch.update(status="completed", finalizing_at=now, completed_at=now)

    async def _batch_get(self, request: web.Request) -> tuple[int, bytes, dict | None]:
        with self._lock:
            batch = self._batches.get(request.match_info["id"])
            if batch is None:
                return 404, _error_body("No such Batch object.", "invalid_request_error", "not_found"), None
            return 200, json.dumps(batch).encode(), None

    async def _batch_list(self, request: web.Request) -> tuple[int, bytes, dict | None]:
        try:
            limit = max(1, min(100, int(request.query.get("limit", 20))))
        except ValueError:
            return 400, _error_body("limit must be an integer.", "invalid_request_error", "invalid_value"), None
        after = request.query.get("after")
        with self._lock:
            newest_first = list(reversed(self._batches.values()))
            if after is not None:
                ids = [b["id"] for b in newest_first]
                newest_first = newest_first[ids.index(after) + 1:] if after in ids else []
            page = newest_first[:limit]
            body = {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                    "last_id": page[-1]["id"] if page else None, "has_more": len(newest_first) > limit}
            return 200, json.dumps(body).encode(), None

    async def _batch_cancel(self, request: web.Request) -> tuple[int, bytes, dict | None]:
        now = int(time.time())
        with self._lock:
            batch = self._batches.get(request.match_info["id"])
            if batch is None:
                return 404, _error_body("No such Batch object.", "invalid_request_error", "not_found"), None
            if batch["status"] in ("validating", "in_progress"):
                batch.update(status="cancelled", cancelling_at=now, cancelled_at=now)
                counts = batch["request_counts"]
                counts["failed"] = counts["total"] - counts["completed"]
            return 200, json.dumps(batch).encode(), None

    async def _fallback(self, request: web.Request) -> web.Response:
        return await self._handle(request, self._fallback_inner)

    async def _fallback_inner(self, request: web.Request) -> tuple[int, bytes, dict | None]:
        path = request.path.rstrip("/")
        if path in ("/v1/chat/completions", "/v1/models"):
            allowed = "POST" if path.endswith("completions") else "GET"
            msg = f"Method {request.method} not allowed for {path}."
            return 405, _error_body(msg, "invalid_request_error", "method_not_allowed"), {"Allow": allowed}
        msg = f"Invalid URL ({request.method} {request.path})"
        return 404, _error_body(msg, "invalid_request_error", "unknown_url"), None

    def _route(self, inner: Callable) -> Callable:
        async def handler(request: web.Request) -> web.Response:
            return await self._handle(request, inner)

        return handler

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models, allow_head=False)
        for method, path, inner in (
            ("POST", "/v1/files", self._file_upload),
            ("GET", "/v1/files/{id}", self._file_get),
            ("GET", "/v1/files/{id}/content", self._file_content),
            ("POST", "/v1/batches", self._batch_create),
            ("GET", "/v1/batches", self._batch_list),
            ("GET", "/v1/batches/{id}", self._batch_get),
            ("POST", "/v1/batches/{id}/cancel", self._batch_cancel),
        ):
            app.router.add_route(method, path, self._route(inner))
        app.router.add_route("*", "/{tail:.*}", self._fallback)
        return app

    # ------------------------------------------------------------ lifecycle

    def request_stop(self, reason: str = "stop") -> None:
        """Ask the server to stop (safe from any thread)."""
        loop, event = self._loop, self._stop_event
        if loop is None or event is None:
            return
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason

        try:
            if threading.get_ident() == getattr(self, "_loop_thread_id", None):
                event.set()
            else:
                loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # the loop is already closed
            pass

    async def serve(self, on_ready: Callable[[str], None] | None = None, handle_signals: bool = False) -> str:
        """Run until stopped (request_stop, a limit or a signal); returns the stop reason."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        self._stop_event = asyncio.Event()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        runner = web.AppRunner(
            self._make_app(), access_log=None, handle_signals=False, shutdown_timeout=self.shutdown_timeout
        )
        try:
            sock.bind((self.host, self.port))
            self.port = sock.getsockname()[1]
            await runner.setup()
            site = web.SockSite(runner, sock, backlog=1024)
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        timer = None
        try:
            if self.max_seconds is not None:
                timer = self._loop.call_later(self.max_seconds, self.request_stop, "max_seconds")
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    self._loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
            if on_ready is not None:
                on_ready(self.base_url)
            await self._stop_event.wait()
        finally:
            if timer is not None:
                timer.cancel()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    self._loop.remove_signal_handler(sig)
            await runner.cleanup()
        return self._stop_reason or "stop"

    def _thread_main(self) -> None:
        def ready(_url: str) -> None:
            self._ready.set()

        try:
            asyncio.run(self.serve(on_ready=ready))
        except BaseException as exc:  # reported by start() when it happens before READY
            self._startup_error = exc
        finally:
            self._stopped.set()
            self._ready.set()

    def start(self, timeout: float = 10.0) -> FakeOpenAIServer:
        """Start in a background thread; returns once listening."""
        if self._thread is not None:
            raise RuntimeError("the server was already started")
        self._thread = threading.Thread(target=self._thread_main, name="fake-openai", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the fake OpenAI server did not start in time")
        if self._startup_error is not None:
            raise RuntimeError("the fake OpenAI server failed to start") from self._startup_error
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop and wait for the background thread (a no-op when already stopped)."""
        self.request_stop("stop")
        if self._thread is not None:
            self._thread.join(self.shutdown_timeout + 10.0 if timeout is None else timeout)

    def wait_stopped(self, timeout: float) -> bool:
        """Wait until the server has stopped by itself (a limit); True when it has."""
        return self._stopped.wait(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stopped.is_set()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- command line


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.support.fake_openai", description="Fake OpenAI-compatible chat server."
    )
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--model", default="fake-judge")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    p.add_argument("--error-429-rate", type=float, default=0.0)
    p.add_argument("--error-500-rate", type=float, default=0.0)
    p.add_argument("--hang-rate", type=float, default=0.0)
    p.add_argument("--truncate-rate", type=float, default=0.0)
    p.add_argument("--garbage-rate", type=float, default=0.0)
    p.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds on 429")
    p.add_argument("--hang-seconds", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--script", default="", help="comma-separated behaviours served first, e.g. 429,500,ok")
    p.add_argument("--max-requests", type=int, default=None)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--keep-bodies", type=int, default=50)
    p.add_argument("--shutdown-timeout", type=float, default=1.0)
    p.add_argument("--batch-delay", type=float, default=0.0, help="seconds from a batch's creation to its end")
    p.add_argument("--batch-script", default="", help="comma-separated batch ends served first, e.g. expire,fail,ok")
    p.add_argument("--prefix-cache-min-tokens", type=int, default=1024, help="shortest prefix served cached")
    p.add_argument("--prefix-cache-block", type=int, default=128, help="cached prefixes grow in these steps (0: off)")
    return p


def _serve(argv: list[str]) -> int:
    a = _serve_parser().parse_args(argv)
    try:
        srv = FakeOpenAIServer(
            host=a.host,
            port=a.port,
            model=a.model,
            latency=a.latency,
            error_429_rate=a.error_429_rate,
            error_500_rate=a.error_500_rate,
            hang_rate=a.hang_rate,
            truncate_rate=a.truncate_rate,
            garbage_rate=a.garbage_rate,
            retry_after=a.retry_after,
            hang_seconds=a.hang_seconds,
            seed=a.seed,
            script=[s for s in a.script.split(",") if s.strip()],
            max_requests=a.max_requests,
            max_seconds=a.max_seconds,
            keep_bodies=a.keep_bodies,
            shutdown_timeout=a.shutdown_timeout,
            batch_delay=a.batch_delay,
            batch_script=[s for s in a.batch_script.split(",") if s.strip()],
            prefix_cache_min_tokens=a.prefix_cache_min_tokens,
            prefix_cache_block=a.prefix_cache_block,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def ready(url: str) -> None:
        print(f"READY {url}", flush=True)

    asyncio.run(srv.serve(on_ready=ready, handle_signals=True))
    print(json.dumps(srv.stats.summary()), file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return _serve(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
