"""Object storage as the disk: a stage runs on local copies of its URLs, and what it wrote is uploaded.

    dno sample s3://b/runs/r1/prompts.parquet -o s3://b/runs/r1/iter-01/samples.parquet --model s3://b/models/sft

Every stage's run goes through `run_staged` (dno_data.stages.load: the CLI and the Python API
alike). A config without a storage URL runs as it is. Otherwise:

1. the output's lease is taken (dno_data.object_lease: a conditional write; a second writer is
   refused with one line);
2. each input URL becomes its copy in the staging mirror ($DNO_CACHE/objects/<scheme>/<bucket>/<key>,
   dno_data.storage.local_of), downloaded only when the object changed (its ETag and the local
   file's stat are recorded): a file; a folder dno wrote (only once its index, written last, is
   there); a run folder's artifacts (`dno sql --run`, `dno report`; not the checkpoints' weights);
   any other folder whole;
3. the output's own objects (the file and the files named after it: its sidecar, a report's
   plots; a checkpoint's top-level JSON files, and those of its CHECKPOINT.records/) are mirrored too, so the stage's output guard and
   its up-to-date check see what is on the bucket;
4. the stage runs unchanged on the local config: DuckDB reads local files only (no extension is
   ever loaded, the lockdown holds), lineage maps the staging paths back to their URLs
   (dno_data.lineage), so a fingerprint is the same on every machine;
5. what it changed is uploaded: a file as one object (a PUT is atomic: a reader sees the old
   object or the whole new one); a folder as its objects, then its index `.dno-objects.json`
   last (a reader refuses a folder whose index is missing or does not match its objects);
   resumable parts go up as each is written (`<output>.parts/part-N.parquet`, after its
   fingerprint.json), so a killed command resumes on any machine, and are deleted only after
   the output is up.

`fetch(url)` is the one call that gives a local path for a URL (a worker's model folder, an
input file); `upload(path, url)` puts a file or a folder the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import storage
from .errors import DnoError
from .storage import is_storage_url, is_url, local_of, path_in, public, record_of

INDEX = ".dno-objects.json"  # a folder's objects, written after all of them
MANIFEST = "dno-manifest.json"  # in every folder dno writes (dno_data.paths)
FINGERPRINT = "fingerprint.json"  # in a parts folder (dno_data.parts)
RUN_FILES = (".parquet", ".json", ".jsonl", ".sqlite")  # what a run folder's mirror takes: no weights
WORK = (".parts", ".partial")  # unfinished work folders
BESIDE = (".records",)  # folders a command writes beside its output, named after it: a checkpoint's training records


# ---------------------------------------------------------------- records: is the local copy the object?

def _stat(path: Path) -> list[int] | None:
    try:
        s = os.stat(path)
    except OSError:
        return None
    return [s.st_size, s.st_mtime_ns, s.st_ino]


def _etag(info: dict) -> str:
    for key in ("ETag", "etag", "generation", "md5Hash", "content_md5"):
        if info.get(key):
            return str(info[key]).strip('"')
    return f"{info.get('size')}:{info.get('LastModified') or info.get('last_modified') or info.get('mtime')}"


def _record(url: str, etag: str, local: Path) -> None:
    path = record_of(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"url": url, "etag": etag, "local": _stat(local)}))
    os.replace(tmp, path)


def _fresh(url: str, etag: str, local: Path) -> bool:
    """The local copy is the object as it is now (same ETag) and was not changed here since."""
    try:
        rec = json.loads(record_of(url).read_text())
    except (OSError, ValueError):
        return False
    return rec.get("etag") == etag and rec.get("local") == _stat(local) and rec.get("local") is not None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------- what is on the bucket

def _call(url: str, doing: str, fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except DnoError:
        raise
    except FileNotFoundError:
        raise
    except Exception as e:
        raise storage.storage_error(url, e, doing) from None


def _info(url: str) -> dict | None:
    """The object at `url` (a file), or None."""
    fs = storage.filesystem(url)
    try:
        info = _call(url, "reading it", fs.info, path_in(url))
    except FileNotFoundError as e:
        if "bucket" in str(e).lower():
            raise storage.storage_error(url, e) from None
        return None
    return info if info.get("type") == "file" else None


def _find(url: str) -> dict[str, dict]:
    """Every object under `url/`, by its path relative to it."""
    fs = storage.filesystem(url)
    base = path_in(url).rstrip("/")
    try:
        found = _call(url, "listing it", fs.find, base + "/", detail=True)
    except FileNotFoundError as e:
        if "bucket" in str(e).lower():
            raise storage.storage_error(url, e) from None
        return {}
    return {k[len(base) + 1:]: v for k, v in found.items() if k.startswith(base + "/") and v.get("type") != "directory"}


def _download(items: list[tuple[str, dict, Path]]) -> None:
    """Objects (url, info, local path) to their local paths: each under a temporary name, then renamed."""
    if not items:
        return
    fs = storage.filesystem(items[0][0])
    tmps = []
    for url, _, local in items:
        local.parent.mkdir(parents=True, exist_ok=True)
        if local.is_dir():
            _remove(local)
        tmps.append(local.with_name(f".{local.name}.{os.getpid()}.download"))
    try:
        _call(items[0][0], "downloading", fs.get, [path_in(u) for u, _, _ in items], [str(t) for t in tmps])
        for (url, info, local), tmp in zip(items, tmps):
            os.replace(tmp, local)
            _record(url, _etag(info), local)
    except FileNotFoundError as e:
        raise DnoError(f"{storage.public(str(items[0][0]))}: an object went away while it was downloaded ({e}); "
                       "rerun when its writer ends") from None
    finally:
        for t in tmps:
            _remove(t)


def _sync(url: str, listing: dict[str, dict], wanted: Iterable[str], local: Path,
          prune: typing.Callable[[str], bool]) -> None:
    """The local folder holds fresh copies of `wanted` (paths under url/); local files for which `prune(rel)`
    is true and that are not on the bucket any more are removed."""
    wanted = set(wanted)
    todo = [(f"{url}/{rel}", listing[rel], local / rel) for rel in sorted(wanted)
            if not _fresh(f"{url}/{rel}", _etag(listing[rel]), local / rel)]
    if local.exists() and not local.is_dir():
        _remove(local)
    _download(todo)
    if local.is_dir():
        for f in local.rglob("*"):
            rel = f.relative_to(local).as_posix()
            if (f.is_file() or f.is_symlink()) and rel not in listing and prune(rel):
                _remove(f)


def _hidden_or_work(rel: str) -> bool:
    parts = rel.split("/")
    return any(p.startswith(".") for p in parts) or any(p.endswith(WORK) for p in parts[:-1])


def _is_run(listing: dict[str, dict]) -> bool:
    return "prompts.parquet" in listing or any(rel.startswith("iter-") for rel in listing)


# ---------------------------------------------------------------- inputs

def fetch(location: Any) -> Any:
    """A local path for `location`: a local path as it is; for a URL, its copy in the staging mirror, fresh.

    A file is downloaded when its object changed; a folder dno wrote only once its index is there (else
    one error line: it is being written); a run folder's artifacts (not checkpoint weights); any other
    folder whole. Nothing at the URL: the staging path, with nothing there (the stage's own "no such file"
    line follows, naming the URL).
    """
    if not is_url(location):
        return location
    url = str(location).rstrip("/")
    local = local_of(url)
    info = _info(url)
    if info is not None:
        if not _fresh(url, _etag(info), local):
            _download([(url, info, local)])
        return local
    listing = _find(url)
    if not listing:
        _remove(local)
        return local
    if INDEX in listing:
        files = _index_files(url, listing)
        _sync(url, listing, files, local, prune=lambda rel: True)
    elif MANIFEST in listing:
        raise DnoError(f"{url}: a folder dno is still writing, or whose upload stopped part way (no {INDEX} yet); "
                       "rerun when its writer ends, or rerun the command that makes it")
    elif _is_run(listing):
        files = [rel for rel in listing if rel.endswith(RUN_FILES) and not _hidden_or_work(rel)]
        _sync(url, listing, files, local, prune=lambda rel: rel.endswith(RUN_FILES) and not _hidden_or_work(rel))
    else:
        _sync(url, listing, listing, local, prune=lambda rel: True)
    return local


def fetch_run(location: Any) -> Any:
    """A run folder's artifacts, local: fetch(), for a folder of a run."""
    return fetch(location)


def _index_files(url: str, listing: dict[str, dict]) -> list[str]:
    """The files of a folder dno wrote, as its index lists them; DnoError when its objects are not those."""
    fs = storage.filesystem(url)
    try:
        index = json.loads(_call(url, "reading its index", fs.cat_file, path_in(f"{url}/{INDEX}")))
        files = index["files"]
    except (ValueError, KeyError, TypeError, FileNotFoundError):
        raise DnoError(f"{url}: its {INDEX} is unreadable; rerun the command that makes it") from None
    for rel, meta in files.items():
        if rel not in listing or _etag(listing[rel]) != meta.get("etag"):
            raise DnoError(f"{url}: its objects are not those its {INDEX} lists ({rel}): it is being written; "
                           "rerun when its writer ends")
    return list(files)


# ---------------------------------------------------------------- uploads

def _local_files(folder: Path) -> list[str]:
    return sorted(f.relative_to(folder).as_posix() for f in folder.rglob("*")
                  if f.is_file() and not _transient(f.name))


def _transient(name: str) -> bool:
    """A lock, a temporary or a download in progress: never uploaded."""
    return name.endswith((".lock", ".tmp", ".download", ".old")) and name.startswith(".")


def upload_file(local: Path, url: str) -> None:
    """One file as one object (a PUT, or a multipart upload that completes at once: atomic either way)."""
    fs = storage.filesystem(url)
    _call(url, "uploading", fs.put_file, str(local), path_in(url))
    _record(url, _etag(_call(url, "uploading", fs.info, path_in(url))), local)


def upload_folder(local: Path, url: str) -> None:
    """A folder: its index removed first, then its files, then objects it no longer has, then the index."""
    fs = storage.filesystem(url)
    index = f"{url}/{INDEX}"
    try:
        _call(url, "uploading", fs.rm_file, path_in(index))
    except FileNotFoundError:
        pass
    files = _local_files(local)
    _call(url, "uploading", fs.put, [str(local / rel) for rel in files], [path_in(f"{url}/{rel}") for rel in files])
    listing = _find(url)
    stale = [path_in(f"{url}/{rel}") for rel in listing if rel not in files and rel != INDEX]
    if stale:
        _call(url, "uploading", fs.rm, stale)
    entries = {}
    for rel in files:
        etag = _etag(listing[rel])
        entries[rel] = {"size": listing[rel].get("size"), "etag": etag}
        _record(f"{url}/{rel}", etag, local / rel)
    body = json.dumps({"files": entries}, indent=1, sort_keys=True).encode()
    _call(url, "uploading", fs.pipe_file, path_in(index), body)


def upload(local: Path | str, url: str) -> None:
    """A file or a folder to `url` (see upload_file, upload_folder)."""
    local = Path(local)
    (upload_folder if local.is_dir() else upload_file)(local, url)


# ---------------------------------------------------------------- an output: mirrored first, uploaded after

def _named_after(name: str, output: str) -> bool:
    """The output and what a command writes beside it under its name: its sidecar, a report's plots."""
    stem = output.rsplit(".", 1)[0]
    if _transient(name):
        return False
    return (name == output or name == f".{output}.dno.json"
            or (name.startswith(f"{stem}-") and name.endswith(".png"))
            or (name.startswith(f".{stem}-") and name.endswith(".png.dno.json")))


@dataclass
class _Output:
    url: str
    local: Path
    before: dict[str, list[int] | None] = field(default_factory=dict)  # local path -> stat when the stage began

    def files(self) -> dict[str, list[int] | None]:
        out = {}
        folder = self.local.parent
        if folder.is_dir():
            for f in folder.iterdir():
                if f != self.local and f.is_file() and _named_after(f.name, self.local.name):
                    out[str(f)] = _stat(f)
        for folder in [self.local, *_beside(self.local)]:
            if folder.is_dir():
                for rel in _local_files(folder):
                    out[str(folder / rel)] = _stat(folder / rel)
        if self.local.exists() and not self.local.is_dir():
            out[str(self.local)] = _stat(self.local)
        return out


def _stage_output(url: str) -> _Output:
    """The output's staging path, holding what the bucket holds of it (enough for the guard and the
    up-to-date check: a file and the files named after it; a folder's top-level JSON files)."""
    local = local_of(url)
    info = _info(url)
    if info is not None:
        if not _fresh(url, _etag(info), local):
            _download([(url, info, local)])
    else:
        _mirror_folder_json(url, local)
    for beside in _beside(local):
        _mirror_folder_json(storage.url_of(beside) or f"{url}{beside.name[len(local.name):]}", beside)
    parent = storage.parent(url)
    fs = storage.filesystem(url)
    try:
        beside = _call(url, "listing its folder", fs.ls, path_in(parent), detail=True)
    except FileNotFoundError:
        beside = []
    remote = {}
    for info in beside:
        n = str(info.get("name", "")).rstrip("/").rsplit("/", 1)[-1]
        if info.get("type") == "file" and n != storage.name(url) and _named_after(n, storage.name(url)):
            remote[n] = info
    todo = [(f"{parent}/{n}", i, local.parent / n) for n, i in remote.items()
            if not _fresh(f"{parent}/{n}", _etag(i), local.parent / n)]
    _download(todo)
    if local.parent.is_dir():
        for f in local.parent.iterdir():
            if f != local and f.is_file() and _named_after(f.name, local.name) and f.name not in remote:
                _remove(f)
    out = _Output(url, local)
    out.before = out.files()
    return out


def _beside(local: Path) -> list[Path]:
    """The folders written beside the output under its name (CHECKPOINT.records/)."""
    return [local.with_name(local.name + suffix) for suffix in BESIDE]


def _mirror_folder_json(url: str, local: Path) -> None:
    """A folder's top-level JSON files from the bucket (its manifest: what the guard and the up-to-date
    check read); nothing there: nothing here."""
    listing = _find(url)
    if listing:
        wanted = [rel for rel in listing if "/" not in rel and rel.endswith(".json") and rel != INDEX]
        stale = [rel for rel in listing if not _fresh(f"{url}/{rel}", _etag(listing[rel]), local / rel)]
        if stale and local.is_dir():  # not the folder on the bucket: start over from its JSON files
            _remove(local)
        _sync(url, listing, wanted, local, prune=lambda rel: True)
    else:
        _remove(local)


def _publish(out: _Output) -> list[str]:
    """Upload what the stage changed: sidecars first (they vouch for the bytes that follow), then files,
    a folder by upload_folder. The paths uploaded."""
    now = out.files()
    changed = sorted((p for p, s in now.items() if out.before.get(p) != s),
                     key=lambda p: (not Path(p).name.startswith("."), p))
    if not changed:
        return []
    inside = [p for p in changed if out.local.is_dir() and Path(p).is_relative_to(out.local)]
    beside = [b for b in _beside(out.local) if b.is_dir() and any(Path(p).is_relative_to(b) for p in changed)]
    for p in changed:
        if p not in inside and not any(Path(p).is_relative_to(b) for b in beside):
            upload_file(Path(p), storage.url_of(p) or out.url)
    for b in beside:  # before the output, as they are published locally (dno_data.training.save)
        upload_folder(b, storage.url_of(b) or f"{out.url}{b.name[len(out.local.name):]}")
    if inside:
        upload_folder(out.local, out.url)
    return changed


# ---------------------------------------------------------------- the hook around every stage

@dataclass
class _Active:
    deferred: list[str] = field(default_factory=list)  # parts folders to delete once the output is up
    fingerprints: set[str] = field(default_factory=set)  # parts folders whose fingerprint.json is up


_ACTIVE: _Active | None = None


def _mentions_path(hint: Any) -> bool:
    return hint is Path or any(_mentions_path(a) for a in typing.get_args(hint))


def url_options(cfg) -> dict[str, Any]:
    """The options of `cfg` (flat names) that hold a storage URL (or a tuple with one); DnoError for a
    path option holding a URL of another kind (http://...)."""
    from .config import flat_fields, to_options

    values = to_options(cfg)
    out = {}
    for x in flat_fields(type(cfg)):
        value = values[x.name]
        items = value if isinstance(value, tuple) else (value,)
        if not any(is_url(v) for v in items):
            continue
        for v in items:
            if is_storage_url(v) or (is_url(v) and _mentions_path(x.hint)):
                try:
                    storage.split(v)  # a scheme dno reads, a bucket, no credentials in it
                except DnoError as e:
                    raise DnoError(f"{x.flag} {e}") from None
        if any(is_storage_url(v) for v in items):
            out[x.name] = value
    return out


def run_staged(cfg, run):
    """run(cfg) on local copies of cfg's storage URLs, its output uploaded after (see the module docstring).

    A config whose class sets PASS_URLS (dno iterate) gets its URLs as they are: it only composes
    other stages' configs, and each of those stages is staged in its own process.
    """
    urls = url_options(cfg)
    if not urls:
        return run(cfg)
    for value in urls.values():
        for v in value if isinstance(value, tuple) else (value,):
            if is_storage_url(v):
                storage.filesystem(v)  # the package is installed (else one line naming the extra)
    if getattr(type(cfg), "PASS_URLS", False):
        return run(cfg)
    return _Staged(cfg, run, urls).run()


class _Staged:
    def __init__(self, cfg, run, urls: dict[str, Any]):
        self.cfg, self._run, self.urls = cfg, run, dict(urls)
        output = self.urls.pop("output", None)
        if output is None and getattr(cfg, "output", 0) is None and hasattr(cfg, "default_output"):
            output = cfg.default_output()  # dno report: RUN/report.html
            output = output if is_storage_url(output) else None
        self.output: str | None = output if is_storage_url(output) else None

    def run(self):
        from .config import replace
        from .object_lease import holding

        if self.output is None:
            return self._call(replace(self.cfg, **self._inputs()))
        if not _main_process():  # another rank of `accelerate launch` / torchrun: rank 0 holds and uploads
            return self._call(replace(self.cfg, **{**self._inputs(), "output": _stage_output(self.output).local}))
        with holding(self.output) as lease:
            mapped = self._inputs()
            out = _stage_output(self.output)
            local_cfg = replace(self.cfg, **{**mapped, "output": out.local})
            state = _activate(_Active())
            try:
                result = self._call(local_cfg)
            except DnoError:  # a command may write its output and still fail (dno judge's failure rate)
                _finish(out, lease, state)
                raise
            finally:
                _activate(None)
            _finish(out, lease, state)
            return result

    def _inputs(self) -> dict[str, Any]:
        mapped = {}
        for name, value in self.urls.items():
            if isinstance(value, tuple):
                mapped[name] = tuple(fetch(v) if is_storage_url(v) else v for v in value)
            else:
                mapped[name] = fetch(value)
        return mapped

    def _call(self, cfg):
        try:
            result = self._run(cfg)
        except DnoError as e:
            raise DnoError(public(str(e))) from None
        return public(result) if isinstance(result, (Path, str)) else result


def _main_process() -> bool:
    """Not one of the other ranks of a multi-process launch (torchrun and accelerate set RANK): only the main
    process writes a checkpoint, so only it takes the lease and uploads."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


def _activate(state: _Active | None) -> _Active | None:
    global _ACTIVE
    _ACTIVE = state
    return state


def _finish(out: _Output, lease, state: _Active) -> None:
    """After the stage: upload what it changed (unless the lease was lost), then remove the parts it finished."""
    _activate(None)
    lease.check()
    _publish(out)
    for url in state.deferred:
        try:
            _call(url, "removing finished parts", storage.filesystem(url).rm, path_in(url), recursive=True)
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------- resumable parts, written through (dno_data.parts)

def _parts_url(folder: Path) -> str | None:
    return storage.url_of(folder) if _ACTIVE is not None else None


def parts_opened(folder: Path) -> None:
    """Before a stage claims its parts folder: the local folder becomes the bucket's (a killed run's parts,
    from whichever machine ran it)."""
    url = _parts_url(folder)
    if url is None:
        return
    listing = _find(url)
    if not listing:
        _remove(folder)
        return
    _sync(url, listing, listing, folder, prune=lambda rel: True)


def parts_claimed(folder: Path) -> None:
    """After the claim: parts of other settings on the bucket go (the claim discarded them here, or refused)."""
    url = _parts_url(folder)
    if url is None:
        return
    fs = storage.filesystem(url)
    listing = _find(url)
    if not listing:
        return
    mine = (folder / FINGERPRINT).read_bytes() if (folder / FINGERPRINT).exists() else None
    theirs = _call(url, "reading", fs.cat_file, path_in(f"{url}/{FINGERPRINT}")) if FINGERPRINT in listing else None
    if mine is not None and theirs is not None and json.loads(mine) == json.loads(theirs):
        _ACTIVE.fingerprints.add(url)
        stale = [rel for rel in listing if not (folder / rel).exists()]
    else:
        stale = list(listing)
    if stale:
        _call(url, "removing stale parts", fs.rm, [path_in(f"{url}/{rel}") for rel in stale])


def part_written(path: Path) -> None:
    """A finished part goes up at once (after its folder's fingerprint.json)."""
    url = _parts_url(path.parent)
    if url is None:
        return
    if url not in _ACTIVE.fingerprints:
        upload_file(path.parent / FINGERPRINT, f"{url}/{FINGERPRINT}")
        _ACTIVE.fingerprints.add(url)
    upload_file(path, f"{url}/{path.name}")


def parts_finished(folder: Path) -> None:
    """The output is written here: its parts on the bucket go once it is uploaded."""
    url = _parts_url(folder)
    if url is not None:
        _ACTIVE.deferred.append(url)
