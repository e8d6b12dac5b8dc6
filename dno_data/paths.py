"""What a path holds, and what a command may do with it.

Inputs are read only from regular files and folders: a named pipe, a device or a socket given
as an input is refused before it is opened (reading one can block forever or never end).

An output replaces only what its own command wrote: an existing path at -o is replaced only
when it is recognised as an output of the same kind; anything else is refused with one line,
`--force` or not, and dno never writes to anything but a regular file, a folder it wrote or
a new path. How each kind of output is recognised as "its own":

  kind                 written by                    recognised by
  prompts, samples,    the stage (samples: also      the Parquet file's `dno.schema` metadata
  judgments, pairs,    `dno merge`)
  eval
  train, sft           the checkpoint's stage        dno-manifest.json: lineage.stage
  train-records        its stage (CHECKPOINT.records/)   dno-manifest.json: lineage.stage
  model import-gguf    `dno model import-gguf`       dno-manifest.json: lineage.stage
  export-dataset       `dno export --format hf-dataset`  dno-manifest.json: lineage.stage
  export               `dno export` (.parquet/.jsonl)    .parquet: `dno.export` metadata; else the sidecar
  report               `dno report` (HTML, PNGs)     the sidecar
  sql                  `dno sql -o` (any format)     the sidecar

The sidecar, `.NAME.dno.json` beside a file whose format has no place for metadata, records
the command and the sha256 of the bytes it wrote; a file changed since (or one the sidecar
does not describe) is the user's, and is not replaced. So what is never replaced: another
kind's output, a folder dno did not write (a model, a dataset, a run folder), a SQLite
database (the judge cache), any file dno did not write, a symbolic link, a named pipe, a
device, a socket.

Two steps: `check_output` before any work (the one-line refusal a user sees early), and
`publisher(kind)`, the final step of dno_data.atomic.atomic_path: under the output's lock
(dno_data.output_lock) it checks the target again right before the rename, so a file that
appeared meanwhile (a second `dno export` on the same -o) is never silently replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from . import atomic, output_lock
from .errors import DnoError

MANIFEST = "dno-manifest.json"  # inside every folder dno writes: {"lineage": {"stage": ...}, ...}
SQLITE_MAGIC = b"SQLite format 3\x00"


# ---------------------------------------------------------------- kinds of output

@dataclass(frozen=True)
class Kind:
    name: str
    own: str  # what an output of this kind is, for messages: "a checkpoint written by `dno train`"
    owner: str  # the identify() tag of an output of this kind: the one thing it may replace
    sidecar: str | None = None  # the format has no metadata: the command its sidecar names


def _artifact_kinds() -> dict[str, Kind]:
    import schemas

    out = {}
    for name, spec in schemas.REGISTRY.items():
        out[name] = Kind(name, f"{_a(name)} {name} artifact (made by `{_command(spec.made_by)}`)",
                         f"artifact:{name}")
    return out


def _a(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _command(made_by: str) -> str:
    """'dno sample PROMPTS -o ...' -> 'dno sample'"""
    return " ".join(made_by.split()[:2])


_FOLDER_OWN = {"train": "a checkpoint written by `dno train`", "sft": "a checkpoint written by `dno sft`",
               "model import-gguf": "a model folder written by `dno model import-gguf`",
               "export": "a datasets folder written by `dno export`",
               "train-records": "training records written by `dno train` or `dno sft`"}

KINDS: dict[str, Kind] = {
    **_artifact_kinds(),
    "train": Kind("train", _FOLDER_OWN["train"], "folder:train"),
    "sft": Kind("sft", _FOLDER_OWN["sft"], "folder:sft"),
    "train-records": Kind("train-records", _FOLDER_OWN["train-records"], "folder:train-records"),
    "model import-gguf": Kind("model import-gguf", _FOLDER_OWN["model import-gguf"],
                              "folder:model import-gguf"),
    "export-dataset": Kind("export-dataset", _FOLDER_OWN["export"], "folder:export"),
    "export": Kind("export", "a file written by `dno export`", "file:export", sidecar="export"),
    "report": Kind("report", "a file written by `dno report`", "file:report", sidecar="report"),
    "sql": Kind("sql", "a result written by `dno sql`", "file:sql", sidecar="sql"),
}


def kind_of(name: str) -> Kind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown kind of output {name!r}; one of {', '.join(KINDS)}") from None


# ---------------------------------------------------------------- what a path holds

@dataclass(frozen=True)
class Found:
    what: str  # "a samples artifact (made by `dno sample`)", "a named pipe", "nothing"
    owner: str | None = None  # e.g. "artifact:samples", "folder:train", "file:sql"
    exists: bool = True
    special: bool = False  # neither a regular file nor a folder: never opened, never written
    sidecar: dict | None = None  # a file recognised by its sidecar: the sidecar's record


NOTHING = Found("nothing", exists=False)

_SPECIAL = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _special(mode: int) -> str | None:
    for test, what in _SPECIAL:
        if test(mode):
            return what
    return None if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else "a special file"


def describe(path: Path | str) -> str:
    """What is at `path`, in words: "a named pipe", "a checkpoint written by `dno train`"..."""
    return identify(path).what


def identify(path: Path | str) -> Found:
    """What is at `path` (the name itself: a symbolic link is not followed), without opening
    anything but a regular file."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return NOTHING
    if stat.S_ISLNK(st.st_mode):
        return Found(f"a symbolic link (to {os.readlink(path)})", special=True)
    special = _special(st.st_mode)
    if special:
        return Found(special, special=True)
    if stat.S_ISDIR(st.st_mode):
        return _identify_folder(path)
    return _identify_file(path)


def _identify_folder(path: Path) -> Found:
    stage = _manifest_stage(path)
    if stage is not None:
        what = _FOLDER_OWN.get(stage, f"a folder written by `dno {stage}`")
        return Found(what, owner=f"folder:{stage}")
    if (path / MANIFEST).exists():
        return Found(f"a folder with an unreadable {MANIFEST}")
    if (path / "config.json").exists():
        return Found("a model folder dno did not write")
    if (path / "state.json").exists() and (path / "dataset_info.json").exists():
        return Found("a datasets folder dno did not write")
    if (path / "prompts.parquet").exists() or any(path.glob("iter-*")):
        return Found("a run folder")
    try:
        empty = not any(path.iterdir())
    except OSError:
        empty = False
    return Found("an empty folder" if empty else "a folder")


def _manifest_stage(folder: Path) -> str | None:
    manifest = folder / MANIFEST
    try:
        if not stat.S_ISREG(os.lstat(manifest).st_mode):
            return None
        stage = json.loads(manifest.read_text())["lineage"]["stage"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return stage if isinstance(stage, str) and stage else None


def _read_head(path: Path, n: int = 16) -> bytes | None:
    """The first bytes of a regular file, opened so that it cannot block (it may have been swapped
    for a pipe since it was looked at)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, n)
    finally:
        os.close(fd)


def _identify_file(path: Path) -> Found:
    head = _read_head(path)
    if head is None:
        return Found("a file dno cannot read", special=not path.is_file())
    if head.startswith(SQLITE_MAGIC):
        return Found("a SQLite database (a judge cache?)")
    if head[:4] == b"PAR1":
        found = _identify_parquet(path)
        if found is not None:
            return found
    record = read_sidecar(path)
    if record is not None:
        command = record.get("command")
        if _matches(path, record):
            return Found(f"a file written by `dno {command}`", owner=f"file:{command}", sidecar=record)
        return Found(f"a file changed since `dno {command}` wrote it")
    if head[:4] == b"GGUF":
        return Found("a GGUF model file")
    return Found("a file dno did not write")


def _identify_parquet(path: Path) -> Found | None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import schemas

    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    name = (meta.get(b"dno.schema") or b"").decode(errors="replace")
    if name:
        spec = schemas.REGISTRY.get(name)
        by = f" (made by `{_command(spec.made_by)}`)" if spec else ""
        return Found(f"{_a(name)} {name} artifact{by}", owner=f"artifact:{name}")
    if b"dno.export" in meta:
        return Found("a file written by `dno export`", owner="file:export")
    return None


# ---------------------------------------------------------------- sidecars

def sidecar_path(path: Path | str) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.dno.json")


def read_sidecar(path: Path) -> dict | None:
    side = sidecar_path(path)
    try:
        if not stat.S_ISREG(os.lstat(side).st_mode):
            return None
        record = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("command"), str):
        return None
    return record


def _digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def _matches(path: Path, record: dict) -> bool:
    """The file's bytes are ones the sidecar's command wrote (sizes compared first: no hashing
    of a file that cannot match)."""
    files = [f for f in record.get("files") or [] if isinstance(f, dict)]
    try:
        size = path.stat().st_size
    except OSError:
        return False
    if not any(f.get("size") == size for f in files):
        return False
    digest = _digest(path)[1]
    return any(f.get("size") == size and f.get("sha256") == digest for f in files)


def _write_sidecar(final: Path, kind: Kind, tmp: Path, previous: Found) -> None:
    """Record the new bytes before they take the final name; the bytes now there stay recorded
    too (when they were this command's), so a crash between the two renames leaves a file the
    sidecar still vouches for."""
    size, digest = _digest(tmp)
    files = [{"size": size, "sha256": digest}]
    if previous.sidecar is not None and previous.owner == kind.owner:
        files += [f for f in previous.sidecar.get("files", []) if f.get("sha256") != digest][:1]
    record = {"command": kind.sidecar, "file": final.name, "files": files}
    with atomic.atomic_path(sidecar_path(final)) as side:
        side.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------- inputs

def check_input(path: Path | str, what: str = "input") -> None:
    """Refuse an input that is neither a regular file nor a folder (a pipe, a device, a socket),
    before anything opens it. A missing path is left to the reader's own message."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    special = _special(mode)
    if special:
        raise DnoError(f"{path}: is {special}, not a file; dno reads its {what} only from regular files "
                       "and folders: pass a file")


# ---------------------------------------------------------------- outputs

def check_output(output: Path | str, inputs: Iterable[Path | str] = (), *, kind: str,
                 replace_own: bool = True) -> None:
    """Refuse, before any work, an output path that would destroy something the command did not write.

    -o equal to an input, or a folder holding one, is refused; so is an input that is a pipe or
    a device. An existing -o is replaced only when it is an output of `kind` (see the table
    above); with `replace_own=False` (`dno export` / `dno model import-gguf` without --force)
    not even then.
    """
    output = Path(output)
    k = kind_of(kind)
    target = output.resolve()
    for i in inputs:
        check_input(i)
        resolved = Path(i).resolve()
        if resolved == target or target in resolved.parents:
            raise DnoError(f"{output}: the output would overwrite the input {resolved}; choose another -o")
    check_target(output, k, replace_own)


def check_target(output: Path, kind: Kind, replace_own: bool = True) -> Found:
    """The refusal rules for one existing path (or a new one); what is there."""
    for parent in output.absolute().parents:
        try:
            mode = os.stat(parent).st_mode
        except FileNotFoundError:
            continue
        except OSError as e:
            raise DnoError(f"{output}: cannot be written ({parent}: {e.strerror}); choose another -o") from None
        if not stat.S_ISDIR(mode):
            raise DnoError(f"{output}: cannot be written ({parent} is a file, not a folder); choose another -o")
        break
    found = identify(output)
    if not found.exists:
        return found
    if found.owner == kind.owner:
        if not replace_own:
            raise DnoError(f"{output}: exists ({kind.own}); pass --force to replace it")
        return found
    if found.special:
        fix = "dno writes only regular files and folders it made"
    else:
        fix = "dno replaces only its own outputs"
    raise DnoError(f"{output}: is {found.what}, not {kind.own}; {fix}: choose another -o (or move it away)")


def publisher(kind: str, *, replace_own: bool = True) -> atomic.Publish:
    """The last step of atomic_path for an output of `kind`: take the output's lock (a command
    that holds it already keeps it), check the target again, record the sidecar, rename."""
    k = kind_of(kind)

    def publish(tmp: Path, final: Path, durable: bool) -> None:
        took = not output_lock.holds(final)
        output_lock.acquire(final)
        try:
            previous = check_target(final, k, replace_own)
            if k.sidecar:
                _write_sidecar(final, k, tmp, previous)
            atomic.replace(tmp, final, durable)
        finally:
            if took:
                output_lock.release(final)

    return publish


def write_output(path: Path | str, kind: str, write: Callable[[Path], object], *, replace_own: bool = True,
                 durable: bool = True) -> Path:
    """Write an output of `kind` atomically: `write(tmp)` makes the file, then it is published
    (checked again under the lock, the sidecar recorded, renamed)."""
    path = Path(path)
    with atomic.atomic_path(path, durable=durable, publish=publisher(kind, replace_own=replace_own)) as tmp:
        write(tmp)
    return path
