"""Calls through the OpenAI Batch API: JSONL files of requests, answered within 24 hours at the batch price.

What `dno judge --batch` does with the calls the call cache does not answer:

  submit   split them by the API's limits on one input file (50,000 requests, 200 MB) and, per
           part, upload the file (files.create, purpose "batch") and start its batch
           (batches.create, /v1/chat/completions, completion window 24h). The work folder's
           `batches.json` records each part's request keys (the lines' custom_id) before its upload,
           its file id after the upload and its batch id the moment the server gives it.
  poll     batches.retrieve on every unfinished batch, the wait between polls doubling from 1 s
           up to `poll_max` seconds (the openai client retries a poll that fails: 429, 5xx,
           timeouts); a progress line reports the requests the batches finished.
  collect  the output file's answers go to the call cache (a later run, batch or not, pays
           nothing for them); the requests of the error file, and those of a batch that failed,
           expired or was cancelled, are failures (the exceptions below) that the caller turns into
           status rows, as it does with a call that failed for good.

A kill anywhere resumes: the rerun reads `batches.json`, polls the recorded batches, downloads the
finished ones' files again, and submits only the keys no record holds. No request is submitted
twice: the one moment a batch exists while its id is not recorded (batches.create reached the
server, its answer did not reach the record) is closed by looking the batch up by its input file
(batches.list, newest first) before starting one for a file uploaded earlier; and batches.create
is never retried blindly (a retry of a request whose answer was lost would start a second batch).
A kill between an upload and its record leaves an unused file on the server, and no batch.

Batch answers do not take the call cache's claims (a batch lives for hours, a claim for minutes):
two processes that batch the same requests at once both pay. One output has one writer (the output
lock), so that takes two outputs judged with the same judge at the same time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from ..artifacts import write_json_atomic
from ..errors import DnoError, missing_extra
from .runner import Call, CallStats, NoAnswer, ApiSettings, describe_failure, endpoint_of, parse_completion, resolve_key

MAX_REQUESTS = 50_000  # the Batch API's limits on one input file
MAX_BYTES = 200 * 1024 * 1024
ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")
LEDGER = "batches.json"


class BatchRequestError(Exception):
    """A request of a batch that ran and got an error answer (its status code, as a call's)."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class BatchExpired(Exception):
    """A request that had not run when its batch expired (the 24 h window) or was cancelled."""


class BatchRejected(Exception):
    """A request of a batch that failed as a whole (its input file was refused)."""


def request_line(call: Call) -> bytes:
    """One line of a batch input file: the call's chat request, its key as the custom_id."""
    body = {"model": call.model, "messages": call.messages, **{k: v for k, v in call.params.items() if v is not None}}
    return json.dumps({"custom_id": call.key, "method": "POST", "url": ENDPOINT, "body": body}).encode() + b"\n"


def split_lines(sizes: list[int], max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES) -> list[range]:
    """Consecutive runs of lines (by their sizes in bytes) that each fit one input file.

    >>> split_lines([10, 10, 10, 10, 10], max_requests=2)
    [range(0, 2), range(2, 4), range(4, 5)]
    >>> split_lines([60, 50, 50, 100], max_bytes=100)
    [range(0, 1), range(1, 3), range(3, 4)]
    >>> split_lines([])
    []
    """
    out, start, size = [], 0, 0
    for i, n in enumerate(sizes):
        if n > max_bytes:
            raise DnoError(f"one batch request is {n:,} bytes, more than a batch file may hold ({max_bytes:,}); "
                           "judge it without --batch")
        if i > start and (i - start >= max_requests or size + n > max_bytes):
            out.append(range(start, i))
            start, size = i, 0
        size += n
    if sizes:
        out.append(range(start, len(sizes)))
    return out


class BatchCalls:
    """Answers to calls through the Batch API, with the call cache and a record in `folder`.

    Has what the judge's report reads of a CallRunner: `cache` (the scoped call cache, which the
    caller may wrap) and `stats`.
    """

    def __init__(self, settings: ApiSettings, cache, folder: Path, *, poll_max: float = 60.0,
                 progress_what: str = "judge batch"):
        try:
            import openai
        except ImportError:
            raise missing_extra("openai", "openai") from None
        self.settings, self.folder, self.poll_max, self.progress_what = settings, Path(folder), poll_max, progress_what
        self.cache = cache.scoped(endpoint_of(settings)) if cache is not None else None
        self.stats = CallStats()
        self._openai = openai
        self.client = openai.OpenAI(base_url=settings.base_url, api_key=resolve_key(settings),
                                    timeout=settings.timeout, max_retries=settings.max_retries)

    # ------------------------------------------------------------ the record
    @property
    def ledger_path(self) -> Path:
        return self.folder / LEDGER

    def _load(self) -> list[dict]:
        return load_ledger(self.folder)

    def _save(self, ledger: list[dict]) -> None:
        write_json_atomic({"batches": ledger}, self.ledger_path)

    # ------------------------------------------------------------ the run
    def run(self, calls: list[Call], on_results: Callable[[dict, set], None] | None = None) -> tuple[dict, set]:
        """Results by key (answers, or the exception of a request that failed) and the keys the cache
        answered; `on_results(results, hits)` is called after the cache is read and after each batch
        is collected, so the caller can write what is complete."""
        from ..console import Progress, say

        t0 = time.perf_counter()
        unique = {c.key: c for c in calls}
        ledger = self._load()
        recorded = {k for r in ledger for k in r["keys"]}
        results: dict = {}
        hits: set[str] = set()
        if self.cache is not None:  # a key in a recorded batch takes its answer from that batch
            got = self.cache.get_many([k for k in unique if k not in recorded])
            results.update(got)
            hits.update(got)
            self.stats.cache_hits += len(got)
        if on_results is not None:
            on_results(results, hits)
        todo = [k for k in unique if k not in results and k not in recorded]
        if todo:
            lines = [request_line(unique[k]) for k in todo]
            for part in split_lines([len(x) for x in lines], MAX_REQUESTS, MAX_BYTES):
                ledger.append({"keys": todo[part.start:part.stop], "file_id": None, "batch_id": None, "status": None,
                               "recorded_at": time.time()})
            self._save(ledger)  # the keys are recorded before anything is sent
            line_of = dict(zip(todo, lines))
        else:
            line_of = {}
        if not ledger:  # the cache answered everything
            self.stats.wall_seconds = time.perf_counter() - t0
            return results, hits
        resumed = {id(r) for r in ledger if r["file_id"] is not None and r["batch_id"] is None}
        for r in ledger:
            if r["batch_id"] is None:
                self._start(r, ledger, line_of, unique, look_up=id(r) in resumed)
        pending = [r for r in ledger if r["status"] not in TERMINAL]
        total = sum(len(r["keys"]) for r in ledger)
        progress = Progress(self.progress_what, total, "requests",
                            done=sum(len(r["keys"]) for r in ledger if r["status"] in TERMINAL))
        for r in ledger:
            if r["status"] in TERMINAL:  # finished before a kill: its files are read again
                self._collect(r, self.client.batches.retrieve(r["batch_id"]), unique, results)
        if on_results is not None and len(pending) < len(ledger):
            on_results(results, hits)
        wait = min(1.0, self.poll_max)
        while pending:
            time.sleep(wait)
            wait = min(2 * wait, self.poll_max)
            finished_now = 0
            for r in list(pending):
                batch = self.client.batches.retrieve(r["batch_id"])
                r["counts"] = _counts(batch)
                if batch.status in TERMINAL:
                    self._collect(r, batch, unique, results)
                    r["status"] = batch.status
                    self._save(ledger)
                    pending.remove(r)
                    finished_now += 1
                    say(f"batch {r['batch_id']}: {batch.status}, {_describe_counts(r['counts'])}")
                elif batch.status != r["status"]:
                    r["status"] = batch.status
                    self._save(ledger)
            progress.set(sum(len(r["keys"]) if r["status"] in TERMINAL else sum(r.get("counts", (0, 0)))
                             for r in ledger))
            if finished_now and on_results is not None:
                on_results(results, hits)
        progress.close()
        self.stats.wall_seconds = time.perf_counter() - t0
        return results, hits

    def _start(self, r: dict, ledger: list[dict], line_of: dict, unique: dict, look_up: bool) -> None:
        """Upload the record's file (unless it was) and start its batch, or find the batch a killed run started."""
        from ..console import say

        openai = self._openai
        if r["file_id"] is None:
            content = b"".join(line_of.get(k) or request_line(unique[k]) for k in r["keys"])
            try:
                f = self.client.files.create(file=(f"dno-batch-{ledger.index(r)}.jsonl", content), purpose="batch")
            except openai.OpenAIError as e:
                raise DnoError(f"uploading a batch file failed ({describe_failure(e)[:200]}); rerun to resume") from None
            r["file_id"] = f.id
            self._save(ledger)
        batch = self._find(r) if look_up else None
        if batch is None:
            try:  # never retried by the client: a lost answer would start a second batch
                batch = self.client.with_options(max_retries=0).batches.create(
                    input_file_id=r["file_id"], endpoint=ENDPOINT, completion_window="24h",
                    metadata={"made_by": "dno judge"})
            except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError) as e:
                batch = self._find(r)  # did the request start it before its answer was lost?
                if batch is None:
                    raise DnoError(f"starting a batch failed ({describe_failure(e)[:200]}); rerun to resume: "
                                   f"its requests are recorded in {self.ledger_path}") from None
            except openai.OpenAIError as e:
                raise DnoError(f"the server refused a batch ({describe_failure(e)[:200]})") from None
        r["batch_id"], r["status"] = batch.id, batch.status
        self._save(ledger)
        say(f"batch {batch.id}: {len(r['keys']):,} requests submitted (recorded in {self.ledger_path}; "
            "a rerun of the same command resumes it)")

    def _find(self, r: dict):
        """The batch made from the record's input file, if one exists (batches.list is newest first)."""
        since = r["recorded_at"] - 3600  # clocks differ: an hour's slack
        for batch in self.client.batches.list(limit=100):
            if batch.input_file_id == r["file_id"]:
                return batch
            if batch.created_at < since:
                return None
        return None

    def _collect(self, r: dict, batch, unique: dict, results: dict) -> None:
        """The answers and failures of a finished batch: answers to the cache, failures as exceptions."""
        got: dict = {}
        if batch.output_file_id:
            for line in self._lines(batch.output_file_id):
                resp = line.get("response") or {}
                got[line.get("custom_id")] = self._answer(line, resp, unique)
        if batch.error_file_id:
            for line in self._lines(batch.error_file_id):
                err, resp = line.get("error") or {}, line.get("response") or {}
                if err.get("code") == "batch_expired":
                    e = BatchExpired(f"batch {batch.id} expired before this request ran ({err.get('message')})")
                elif resp:
                    e = self._answer(line, resp, unique)
                else:
                    e = BatchRequestError(f"batch {batch.id}: {err.get('code')}: {err.get('message')}")
                got[line.get("custom_id")] = e
        for key in r["keys"]:
            res = got.get(key)
            if res is None:
                res = _missing(batch)
            if isinstance(res, BaseException):
                self.stats.failures[type(res).__name__] += 1
            else:
                self.stats.calls += 1
                self.stats.input_tokens += res.input_tokens
                self.stats.output_tokens += res.output_tokens
            results[key] = res

    def _answer(self, line: dict, resp: dict, unique: dict):
        key, body, status = line.get("custom_id"), resp.get("body") or {}, resp.get("status_code")
        if status == 200 and isinstance(body, dict) and body.get("choices"):
            result = parse_completion(body)
            if self.cache is not None and key in unique:
                self.cache.put(key, unique[key].model, result, batch=True)
            return result
        if status == 200:
            return NoAnswer("the server answered without choices")
        error = (body.get("error") or {}) if isinstance(body, dict) else {}
        return BatchRequestError(str(error.get("message") or body)[:300], status)

    def _lines(self, file_id: str) -> list[dict]:
        try:
            text = self.client.files.content(file_id).text
        except self._openai.OpenAIError as e:
            raise DnoError(f"downloading the batch file {file_id} failed ({describe_failure(e)[:200]}); "
                           "rerun to resume") from None
        return [json.loads(x) for x in text.splitlines() if x.strip()]


def _missing(batch) -> BaseException:
    """The failure of a request that neither file of a finished batch mentions."""
    if batch.status == "failed":
        errors = [f"{e.code}: {e.message}" for e in ((batch.errors.data or []) if batch.errors else [])]
        return BatchRejected(f"batch {batch.id} failed: {'; '.join(errors)[:300] or 'no reason given'}")
    if batch.status in ("expired", "cancelled"):
        return BatchExpired(f"batch {batch.id} {batch.status} before this request ran")
    return BatchRequestError(f"batch {batch.id} {batch.status} without an answer to this request")


def _counts(batch) -> tuple[int, int]:
    c = batch.request_counts
    return (c.completed, c.failed) if c is not None else (0, 0)


def _describe_counts(counts) -> str:
    done, failed = counts or (0, 0)
    return f"{done:,} answered, {failed:,} failed"


def load_ledger(folder: Path) -> list[dict]:
    """The batches recorded in a work folder (none when it has no record)."""
    path = Path(folder) / LEDGER
    if not path.exists():
        return []
    try:
        return json.loads(path.read_text())["batches"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DnoError(f"{path}: not a readable record of batches ({e}); delete {path.parent} to discard the "
                       "unfinished work (its batches still run, and are billed)") from None


def unfinished(folder: Path) -> list[dict]:
    """Recorded batches whose answers were not collected (started, or possibly started)."""
    return [r for r in load_ledger(folder) if r["file_id"] is not None and r["status"] not in TERMINAL]
