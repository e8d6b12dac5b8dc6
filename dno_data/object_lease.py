"""One writer per output on object storage: a lease object beside the output, made by a conditional write.

Object storage has no file lock, and a lock held by a machine that dies must not block the
next one. What replaces dno_data.output_lock's flock for an `s3://` output:

  s3://bucket/runs/r1/iter-01/.samples.parquet.lock   {"owner": ..., "host": ..., "pid": ..., "ttl": 60}

- taken with `PutObject If-None-Match: *`: the store creates the object only when none exists,
  so of two writers exactly one gets it; the other is refused with one line naming the holder;
- renewed every ttl/3 seconds by a heartbeat thread with `PutObject If-Match: <its ETag>`, so a
  lease is only ever renewed by its holder;
- taken over only when it lapsed: its age by the store's own clock (the response's Date minus the
  object's Last-Modified, so machines' clocks do not matter) is over its ttl; the takeover is
  `PutObject If-Match: <the lapsed lease's ETag>`, so of two takers one wins;
- deleted on release with `DeleteObject If-Match: <its ETag>` (never someone else's lease).

A holder whose renewal fails because another process took the lease over (it stalled past the
ttl) marks it lost, and dno_data.staging then refuses to upload. S3 (and S3-compatible stores
with conditional writes: moto's server in the tests) goes through boto3. Other schemes (gs://,
az://) go through fsspec's exclusive create (`mode="create"`); there a takeover deletes the lapsed
lease and creates a new one, which two takers at the same moment can both pass: a weaker guarantee,
and not tested here.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime

from . import storage
from .errors import DnoError

TTL_SECONDS = 60.0
HOST = socket.gethostname()
_HELD: dict[str, Lease] = {}  # output URL -> its lease, in this process


def lease_url(output: str) -> str:
    """`.NAME.lock` beside the output (the local lock's name: dno_data.output_lock)."""
    return f"{storage.parent(output)}/.{storage.name(output)}.lock"


class Lease:
    """The lease of one output URL. acquire() or DnoError; release() gives it back."""

    def __init__(self, output: str, ttl: float = TTL_SECONDS):
        self.output = output
        self.url = lease_url(output)
        self.ttl = float(ttl)
        self.owner = uuid.uuid4().hex
        self.etag: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        store = _S3 if storage.split(output)[0] in ("s3", "s3a") else _Fsspec
        self._store = store(self.url, output)

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "host": HOST, "pid": os.getpid(), "ttl": self.ttl,
                           "output": self.output, "renewed": time.time()}).encode()

    def acquire(self) -> None:
        for _ in range(3):  # the holder may release between our create and our read
            etag = self._store.create(self._body())
            if etag is not None:
                self.etag = etag
                break
            current = self._store.read()
            if current is None:
                continue
            body, etag, age = current
            ttl = float(body.get("ttl") or self.ttl)
            if age is None or age <= ttl:
                holder = f"pid {body.get('pid')} on {body.get('host')}" if body.get("pid") else "unknown"
                raise DnoError(f"{self.output}: another dno process ({holder}) is writing this output right now; "
                               f"wait for it to end (its lease {self.url} lapses {ttl:g} s after it stops) or choose "
                               "another -o")
            etag = self._store.replace(self._body(), etag)
            if etag is not None:
                self.etag = etag
                break
        else:
            raise DnoError(f"{self.output}: could not take its lease {self.url}; another process keeps taking it")
        _HELD[self.output] = self
        self._thread = threading.Thread(target=self._heartbeat, name=f"dno-lease {self.output}", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.ttl / 3):
            try:
                etag = self._store.replace(self._body(), self.etag)
            except Exception:  # a network error: try again at the next beat, while the lease may still hold
                if time.monotonic() - last_ok > self.ttl:
                    self.lost = True
                    return
                continue
            if etag is None:  # another process took it over: we stalled past the ttl
                self.lost = True
                return
            self.etag, last_ok = etag, time.monotonic()

    def check(self) -> None:
        """DnoError when the lease was lost (another writer may have taken the output over)."""
        if self.lost:
            raise DnoError(f"{self.output}: this command lost its lease {self.url} (it could not renew it for "
                           f"{self.ttl:g} s, and another process may write the output now); nothing was uploaded: "
                           "rerun the command")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if _HELD.get(self.output) is self:
            del _HELD[self.output]
        if self.etag is not None and not self.lost:
            try:
                self._store.delete(self.etag)
            except Exception:  # it lapses by itself
                pass
        self.etag = None


@contextmanager
def holding(output: str, ttl: float = TTL_SECONDS) -> Iterator[Lease]:
    """The lease of `output` for the block (re-entrant within a process, as the local lock)."""
    held = _HELD.get(output)
    if held is not None:
        yield held
        return
    lease = Lease(output, ttl)
    lease.acquire()
    try:
        yield lease
    finally:
        lease.release()


@atexit.register
def _release_all() -> None:
    for lease in list(_HELD.values()):
        lease.release()


# ---------------------------------------------------------------- the stores

def _code(e: Exception) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


_CONFLICT = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")


class _S3:
    """Conditional writes through boto3 (it reads AWS_ENDPOINT_URL and the credential variables itself)."""

    def __init__(self, url: str, output: str):
        _, self.bucket, self.key = storage.split(url)
        self.url, self.output = url, output  # errors name the output
        try:
            import boto3
        except ImportError:
            raise DnoError(f"{output}: the lease of an s3:// output needs boto3, which is not installed; install it "
                           f"with: pip install 'dno-data[{storage.EXTRA}]'") from None
        self.client = boto3.client("s3")

    def _fail(self, e: Exception, doing: str) -> DnoError:
        return storage.storage_error(self.output, e, doing)

    def create(self, body: bytes) -> str | None:
        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, IfNoneMatch="*")["ETag"]
        except Exception as e:
            if _code(e) in _CONFLICT:
                return None
            raise self._fail(e, "taking its lease") from None

    def replace(self, body: bytes, etag: str) -> str | None:
        try:
            return self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, IfMatch=etag)["ETag"]
        except Exception as e:
            if _code(e) in (*_CONFLICT, "NoSuchKey", "404"):
                return None
            raise

    def read(self) -> tuple[dict, str, float | None] | None:
        try:
            r = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as e:
            if _code(e) in ("NoSuchKey", "404"):
                return None
            raise self._fail(e, "reading its lease") from None
        try:
            body = json.loads(r["Body"].read())
        except ValueError:
            body = {}
        date = r.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        age = (parsedate_to_datetime(date) - r["LastModified"]).total_seconds() if date else None
        return (body if isinstance(body, dict) else {}), r["ETag"], age

    def delete(self, etag: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=etag)


class _Fsspec:
    """Exclusive create through fsspec (gcsfs, adlfs); a lapsed lease is deleted, then created again."""

    def __init__(self, url: str, output: str):
        self.url, self.output = url, output
        self.fs = storage.filesystem(url)
        self.path = storage.path_in(url)

    def create(self, body: bytes) -> str | None:
        try:
            self.fs.pipe_file(self.path, body, mode="create")
        except FileExistsError:
            return None
        except Exception as e:
            raise storage.storage_error(self.output, e, "taking its lease") from None
        return json.loads(body)["owner"]

    def replace(self, body: bytes, etag: str) -> str | None:
        current = self.read()
        if current is not None and current[1] != etag:
            return None
        if current is not None:
            self.fs.rm_file(self.path)
        return self.create(body)

    def read(self) -> tuple[dict, str, float | None] | None:
        try:
            body = json.loads(self.fs.cat_file(self.path))
            info = self.fs.info(self.path)
        except FileNotFoundError:
            return None
        modified = info.get("LastModified") or info.get("last_modified") or info.get("updated") or info.get("mtime")
        age = None
        if hasattr(modified, "timestamp"):
            age = time.time() - modified.timestamp()
        elif isinstance(modified, (int, float)):
            age = time.time() - modified
        return body, body.get("owner", ""), age

    def delete(self, etag: str) -> None:
        current = self.read()
        if current is not None and current[1] == etag:
            self.fs.rm_file(self.path)
