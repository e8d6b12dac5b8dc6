"""Calls to OpenAI-compatible chat servers: async, bounded, rate-limited, retried, cached.

Libraries, not hand-written loops:
- `openai` (AsyncOpenAI) does the retries: exponential backoff with jitter (0.5 s doubling to
  8 s) on 408/409/429/5xx, timeouts and connection errors, and honours `Retry-After` /
  `retry-after-ms`; `max_retries` bounds the attempts.
- `aiolimiter` (leaky bucket) enforces requests-per-minute and tokens-per-minute.
- `asyncio.Semaphore` bounds the requests in flight (`--concurrency`).
- `CallCache` (SQLite, call_cache.py) stores every answer the moment it arrives, keyed by the
  server and the request, and keeps concurrent processes from paying twice for one request.

A call that fails for good (including a 200 answer without choices, `NoAnswer`) is returned as
its exception and never cached, so asking again later asks the server again.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse

from ..errors import DnoError, missing_extra
from .call_cache import CachedCall, CallCache, default_cache_path


@dataclass(frozen=True)
class ApiSettings:
    base_url: str | None = None  # None: the client's environment (OPENAI_BASE_URL), else api.openai.com
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the variable holding the key; the key is never stored
    concurrency: int = 16  # requests in flight
    rpm: float | None = None  # requests per minute
    tpm: float | None = None  # tokens per minute (estimated input + max output)
    timeout: float = 60.0  # seconds per attempt
    max_retries: int = 6  # attempts after the first, on 429/5xx/timeouts

    def __post_init__(self) -> None:
        check_base_url(self.base_url, "--base-url")


def redact_url(text: str) -> str:
    """`text` with every URL's user:password part and secret query values removed (dno_data.redact).

    >>> redact_url("GET http://alice:pw@host:8000/v1?api_key=sk-1 failed")
    'GET http://***@host:8000/v1?api_key=*** failed'
    """
    from ..redact import redact_text

    return redact_text(text)


def check_base_url(url: str | None, where: str) -> None:
    """Refuse a server URL that carries credentials: they would end up in lineage metadata and
    error lines, and OpenAI-compatible servers take the key as a bearer token anyway."""
    if url and (urlparse(url).username is not None or urlparse(url).password is not None):
        raise DnoError(f"{where}: {redact_url(url)} carries user:password credentials; drop them from the URL "
                       "and put the key in an environment variable named by --api-key-env")


class NoAnswer(ValueError):
    """A 200 response that holds no answer (no choices): a failure, never cached."""


class Call:
    """One chat request. `key` addresses it in the cache; it hashes what the request is made of
    (model, template, decoding parameters, the prompt and the candidates in their shown order),
    so a cached call never needs its messages rendered."""

    __slots__ = ("key", "model", "params", "_build", "_messages")

    def __init__(self, key: str, model: str, params: dict, build):
        self.key, self.model, self.params, self._build, self._messages = key, model, params, build, None

    @property
    def messages(self) -> list[dict]:
        if self._messages is None:
            self._messages = self._build()
        return self._messages

    @property
    def est_tokens(self) -> int:
        """Input (about 4 characters a token) plus the most output the request allows."""
        return (sum(len(m["content"]) for m in self.messages) // 4 + 4 * len(self.messages)
                + int(self.params.get("max_tokens") or 0))


@dataclass
class CallStats:
    cache_hits: int = 0
    calls: int = 0
    failures: Counter = field(default_factory=Counter)
    waited_for_other_process: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # of input_tokens, served from the server's prefix cache
    wall_seconds: float = 0.0  # set by the caller that drives the runner


def endpoint_of(settings: ApiSettings) -> str:
    """The server the calls go to, resolved as the openai client does (base_url, then
    $OPENAI_BASE_URL, then api.openai.com); the call cache keys answers by it."""
    return (settings.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")


def resolve_key(settings: ApiSettings) -> str:
    if settings.base_url is None:
        check_base_url(os.environ.get("OPENAI_BASE_URL"), "$OPENAI_BASE_URL")
    key = os.environ.get(settings.api_key_env)
    if key:
        return key
    host = urlparse(settings.base_url or os.environ.get("OPENAI_BASE_URL", "")).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1"):
        return "EMPTY"  # local servers (vllm serve, tests) accept any key
    raise DnoError(f"${settings.api_key_env} is not set: export it (or pass --api-key-env NAME of the variable "
                   "that holds the key)")


class CallRunner:
    """Runs calls against one server with bounded concurrency, rate limits and the cache."""

    def __init__(self, settings: ApiSettings, cache: CallCache | None):
        try:
            import openai
        except ImportError:
            raise missing_extra("openai", "openai") from None
        self.settings = settings
        self.endpoint = endpoint_of(settings)
        self.cache = cache.scoped(self.endpoint) if cache is not None else None
        self.stats = CallStats()
        self._openai = openai
        extra = {}
        try:  # aiohttp as the client's transport: about 1.5x less CPU per request than httpx
            import aiohttp  # noqa: F401

            extra["http_client"] = openai.DefaultAioHttpClient(timeout=settings.timeout)
        except (ImportError, AttributeError, RuntimeError):
            pass
        self.client = openai.AsyncOpenAI(base_url=settings.base_url, api_key=resolve_key(settings),
                                         timeout=settings.timeout, max_retries=settings.max_retries, **extra)
        self._sem: asyncio.Semaphore | None = None
        self._rpm = self._tpm = None
        self.waiting = 0  # calls waiting for a request slot: callers feed work while this is low

    def _limits(self):
        if self._sem is None:  # created inside the running loop
            from aiolimiter import AsyncLimiter

            self._sem = asyncio.Semaphore(max(1, self.settings.concurrency))
            if self.settings.rpm:
                self._rpm = AsyncLimiter(self.settings.rpm, 60)
            if self.settings.tpm:
                self._tpm = AsyncLimiter(self.settings.tpm, 60)

    async def aclose(self) -> None:
        await self.client.close()

    async def run(self, calls: list[Call]) -> tuple[dict[str, CachedCall | BaseException], set[str]]:
        """Results by key (cached or fresh answers, or the exception of a call that failed for good),
        and the keys that came from the cache."""
        self._limits()
        unique = {c.key: c for c in calls}
        results: dict[str, CachedCall | BaseException] = {}
        hits: set[str] = set()
        if self.cache is not None:
            cached = self.cache.get_many(unique)
            self.stats.cache_hits += len(cached)
            results.update(cached)
            hits.update(cached)
        pending = [k for k in unique if k not in results]
        mine, theirs = self.cache.claim(pending) if self.cache is not None else (pending, [])
        await self._call_all([unique[k] for k in mine], results)
        self.stats.waited_for_other_process += len(theirs)
        while theirs:  # another process is paying for these: wait for its answers
            await asyncio.sleep(0.5)
            got = self.cache.get_many(theirs)
            results.update(got)
            hits.update(got)
            self.stats.cache_hits += len(got)
            theirs = [k for k in theirs if k not in got]
            if theirs:  # a claim whose owner died or whose lease ran out becomes ours
                taken, theirs = self.cache.claim(theirs)
                await self._call_all([unique[k] for k in taken], results)
        return results, hits

    async def _call_all(self, calls: list[Call], results: dict) -> None:
        self.waiting += len(calls)
        fresh = await asyncio.gather(*(self._call(c) for c in calls))
        results.update((c.key, r) for c, r in zip(calls, fresh))

    async def _call(self, call: Call) -> CachedCall | BaseException:
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1  # counted in by _call_all
        try:
            if self._rpm is not None:
                await self._rpm.acquire()
            if self._tpm is not None:
                await self._tpm.acquire(min(call.est_tokens, self.settings.tpm))
            try:
                # The client's documented way to a raw endpoint (retries, auth and errors as create's): the
                # body as text, with neither the typed-params walk of create (about 0.8 ms a call of CPU,
                # 16 % of the judge's process at 5,000 calls) nor pydantic objects we would read three fields of.
                body = {"model": call.model, "messages": call.messages,
                        **{k: v for k, v in call.params.items() if v is not None}}
                resp = json.loads(await self.client.post("/chat/completions", body=body, cast_to=str))
                if not isinstance(resp, dict) or not resp.get("choices"):
                    raise NoAnswer("the server answered without choices")
            except (self._openai.OpenAIError, ValueError) as e:
                self.stats.failures[type(e).__name__] += 1
                if self.cache is not None:
                    self.cache.release([call.key])
                return e
        finally:
            self._sem.release()
        self.stats.calls += 1
        result = parse_completion(resp)
        self.stats.input_tokens += result.input_tokens
        self.stats.output_tokens += result.output_tokens
        self.stats.cached_tokens += result.cached_tokens
        if self.cache is not None:
            self.cache.put(call.key, call.model, result)
        return result


def parse_completion(resp: dict) -> CachedCall:
    """The fields a judge needs from a chat.completion JSON object.

    >>> parse_completion({"choices": [{"message": {"content": "A"}, "finish_reason": "stop",
    ...     "logprobs": {"content": [{"token": "A", "logprob": -0.1, "top_logprobs": [{"token": "A", "logprob": -0.1}]}]}}],
    ...     "usage": {"prompt_tokens": 1300, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 1024}}})
    CachedCall(content='A', finish_reason='stop', logprobs=[[{'token': 'A', 'logprob': -0.1}]], input_tokens=1300, output_tokens=1, cached_tokens=1024)
    """
    choice = (resp.get("choices") or [None])[0] or {}
    usage = resp.get("usage") or {}
    content = ((choice.get("logprobs") or {}).get("content")) or []
    logprobs = [[{"token": t.get("token"), "logprob": t.get("logprob")} for t in (c.get("top_logprobs") or [])]
                for c in content[:3]] or None
    return CachedCall(
        content=(choice.get("message") or {}).get("content"),
        finish_reason=choice.get("finish_reason"),
        logprobs=logprobs,
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
    )


def describe_failure(e: BaseException) -> str:
    status = getattr(e, "status_code", None)
    text = f"{type(e).__name__}{f' {status}' if status else ''}: {e}"
    return redact_url(text)[:500]


def make_runner(settings: ApiSettings, cache_path=None, no_cache: bool = False) -> CallRunner:
    """A runner with the call cache at `cache_path` (default $DNO_CACHE or ~/.cache/dno/judge.sqlite); the
    key and the client are checked first, so a refusal leaves no cache file behind."""
    check_api(settings)
    return CallRunner(settings, None if no_cache else CallCache(cache_path or default_cache_path()))


def check_api(settings: ApiSettings) -> None:
    """Fail before any work (missing openai package, API key not set) rather than mid-run."""
    try:
        import openai  # noqa: F401
    except ImportError:
        raise missing_extra("openai", "openai") from None
    resolve_key(settings)


def answer_all(settings: ApiSettings, calls: list[Call], cache_path=None, *,
               what: Callable[[Call], str]) -> dict[str, CachedCall]:
    """Answers to `calls` by key, for callers that need every answer (teachers, the `openai`
    sampling backend): the cache first when `cache_path` is given, the rest asked concurrently.
    A call that fails for good is a DnoError that starts with `what(call)`."""
    check_api(settings)  # before the cache file is made
    cache = CallCache(cache_path) if cache_path else None

    async def work(runner: CallRunner):
        results, _ = await runner.run(calls)
        return results

    try:
        results = run_with_runner(lambda: CallRunner(settings, cache), work)
    finally:
        if cache is not None:
            cache.close()
    for call in calls:
        got = results[call.key]
        if isinstance(got, BaseException):
            raise DnoError(f"{what(call)} failed after retries ({describe_failure(got)[:200]}); rerun to resume")
    return results


def run_with_runner(make_runner, work):
    """`await work(runner)` on a fresh runner in a new event loop, closing the runner after
    (its HTTP client belongs to that loop, so a runner never outlives one asyncio.run)."""

    async def go():
        runner = make_runner()
        try:
            return await work(runner)
        finally:
            await runner.aclose()

    return asyncio.run(go())
