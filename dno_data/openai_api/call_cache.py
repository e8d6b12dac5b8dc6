"""A persistent, content-addressed cache of OpenAI-compatible chat calls, safe for concurrent processes.

Every call through dno_data.openai_api.runner can use it: judge calls, teacher answers and
samples of the `openai` backend. SQLite in WAL mode (the standard library; many readers, one
writer at a time, crash-safe). Key: a hash of the server's endpoint and the whole request (model,
messages or what they are rendered from, decoding parameters), so one cache never serves one
server's answers for another's (`scoped`). Value: the raw answer and its token usage, stored
the moment it arrives. The file is private to its owner (mode 0600): it holds prompts and answers.

Concurrent processes on one cache do not double-pay: before calling, a process
*claims* the keys it will call (a row in `claims` with its pid and host). A key claimed by a
live process is waited for, not called; a claim whose process is gone (kill -9) or whose
lease ran out is taken over.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DnoError
from ..paths import check_input
from ..ids import stable_hash

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    model TEXT,
    content TEXT,            -- the judge's raw answer
    finish_reason TEXT,
    logprobs TEXT,           -- JSON of the first tokens' top logprobs, when asked for
    input_tokens INTEGER,
    output_tokens INTEGER,
    created_at REAL,
    cached_tokens INTEGER,   -- of input_tokens, how many the server served from its prefix cache
    batch INTEGER            -- 1: answered through the Batch API (billed at its price)
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    owner TEXT,              -- host:pid
    expires REAL
);
"""

HOST = socket.gethostname()


@dataclass(frozen=True)
class CachedCall:
    content: str | None
    finish_reason: str | None
    logprobs: list | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0  # of input_tokens, served from the server's prefix cache (usage.prompt_tokens_details)


def default_cache_path() -> Path:
    return Path(os.environ.get("DNO_CACHE", Path.home() / ".cache" / "dno" / "judge.sqlite"))


class CallCache:
    def __init__(self, path: Path | str, lease_seconds: float = 600.0):
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            self.path = self.path / "judge.sqlite"
        check_input(self.path, "judge cache")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _make_private(self.path)
        self.owner = f"{HOST}:{os.getpid()}"
        self.lease = lease_seconds
        deadline = time.time() + 60
        while True:
            try:
                self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(SCHEMA)
                columns = {r[1] for r in self.db.execute("PRAGMA table_info(calls)")}
                for column in ("cached_tokens", "batch"):  # a cache written before these were recorded
                    if column not in columns:
                        self.db.execute(f"ALTER TABLE calls ADD COLUMN {column} INTEGER")
                break
            except sqlite3.OperationalError as e:
                # Two processes creating one cache at once: switching to WAL does not wait for the
                # busy handler, it says "database is locked". Wait and try again.
                if "locked" not in str(e) or time.time() > deadline:
                    raise DnoError(f"{self.path}: not a usable call cache ({e}); pass another --cache path") from None
                self.db.close()
                time.sleep(0.05 + 0.1 * random.random())
            except sqlite3.DatabaseError as e:
                raise DnoError(f"{self.path}: not a usable call cache ({e}); pass another --cache path") from None

    def close(self) -> None:
        self.db.close()

    def scoped(self, endpoint: str) -> ScopedCache:
        """This cache as seen by the runner of one server."""
        return ScopedCache(self, endpoint)

    # -------------------------------------------------------------- reads
    def get_many(self, keys: Iterable[str]) -> dict[str, CachedCall]:
        keys = list(dict.fromkeys(keys))
        out: dict[str, CachedCall] = {}
        for i in range(0, len(keys), 900):  # SQLite's bound-parameter limit
            chunk = keys[i:i + 900]
            marks = ",".join("?" * len(chunk))
            for key, content, finish, logprobs, tin, tout, tcached in self.db.execute(
                f"SELECT key, content, finish_reason, logprobs, input_tokens, output_tokens, cached_tokens FROM calls "
                f"WHERE key IN ({marks})", chunk
            ):
                out[key] = CachedCall(content, finish, json.loads(logprobs) if logprobs else None, tin or 0, tout or 0,
                                      tcached or 0)
        return out

    # -------------------------------------------------------------- writes
    def put(self, key: str, model: str, call: CachedCall, batch: bool = False) -> None:
        """Store an answer (`batch`: it came through the Batch API, which the report prices at the batch rate)."""
        with self._tx():
            self.db.execute(
                "INSERT OR IGNORE INTO calls (key, model, content, finish_reason, logprobs, input_tokens, output_tokens, "
                "created_at, cached_tokens, batch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, model, call.content, call.finish_reason,
                 json.dumps(call.logprobs) if call.logprobs is not None else None,
                 call.input_tokens, call.output_tokens, time.time(), call.cached_tokens, int(batch)),
            )
            self.db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))

    def claim(self, keys: list[str]) -> tuple[list[str], list[str]]:
        """Claim keys to call: returns (claimed by us, held by another live process)."""
        now = time.time()
        mine, theirs = [], []
        with self._tx():
            for key in keys:
                if self.db.execute("SELECT 1 FROM calls WHERE key = ?", (key,)).fetchone() is not None:
                    theirs.append(key)  # answered since the caller read the cache: read it, never call it again
                    continue
                row = self.db.execute("SELECT owner, expires FROM claims WHERE key = ?", (key,)).fetchone()
                if row is None or row[0] == self.owner or row[1] < now or not _alive(row[0]):
                    self.db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (key, self.owner, now + self.lease))
                    mine.append(key)
                else:
                    theirs.append(key)
        return mine, theirs

    def release(self, keys: Iterable[str]) -> None:
        with self._tx():
            self.db.executemany("DELETE FROM claims WHERE key = ? AND owner = ?", [(k, self.owner) for k in keys])

    def _tx(self):
        return _Transaction(self.db)


def scoped_key(endpoint: str, key: str) -> str:
    """The stored key of request `key` sent to `endpoint`."""
    return stable_hash("endpoint", endpoint, key, length=32)


class ScopedCache:
    """A CallCache whose keys are those of one server: the same request sent to another server
    is another entry. Callers keep using their request keys."""

    def __init__(self, cache: CallCache, endpoint: str):
        self.cache, self.endpoint = cache, endpoint

    def _map(self, keys: Iterable[str]) -> dict[str, str]:
        return {scoped_key(self.endpoint, k): k for k in keys}

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedCall]:
        m = self._map(keys)
        return {m[k]: v for k, v in self.cache.get_many(m).items()}

    def claim(self, keys: list[str]) -> tuple[list[str], list[str]]:
        m = self._map(keys)
        mine, theirs = self.cache.claim(list(m))
        return [m[k] for k in mine], [m[k] for k in theirs]

    def put(self, key: str, model: str, call: CachedCall, batch: bool = False) -> None:
        self.cache.put(scoped_key(self.endpoint, key), model, call, batch=batch)

    def release(self, keys: Iterable[str]) -> None:
        self.cache.release(list(self._map(keys)))


def _make_private(path: Path) -> None:
    """Create the file readable by its owner only, or tighten an existing one we own (SQLite
    gives its -wal and -shm files the database file's mode)."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        if path.stat().st_mode & 0o077 and path.stat().st_uid == os.getuid():
            path.chmod(0o600)
    except OSError as e:
        raise DnoError(f"{path}: cannot open the call cache ({e.strerror}); pass another --cache path") from None


class _Transaction:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _alive(owner: str) -> bool:
    """Is the claiming process still running? (Only knowable on the same host.)"""
    host, _, pid = owner.rpartition(":")
    if host != HOST:
        return True  # another machine on a shared disk: trust its lease
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True
