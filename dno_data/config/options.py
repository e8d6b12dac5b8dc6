"""One declaration per option: its help, its check, whether it changes the output, its flags.

A stage's config is a frozen dataclass whose fields are declared with `opt(...)`, with a shared
declaration such as `CONCURRENCY.field(16)`, or with `group(Api)` for a nested group of options
(dno_data.config.groups). The declaration is all there is: the config checks the value when it
is built (dno_data.config.base), the command line is generated from it (stages/), the lineage
leaves out what does not change the output.

- `changes_output=False` marks a setting of how a stage runs (concurrency, cache path, output
  path...), not of what it makes: the lineage fingerprint leaves it out, so a rerun with other
  such settings still resumes and counts as up to date.
- `check(value)` raises ValueError with the reason; the config turns it into one `error:` line
  naming the flag.
- `none_word` is the command-line word that stands for None (`--teacher none`, `--split all`).
- `aliases` are old flags still accepted and hidden from --help, so each thing has one name.

Nothing here imports more than the standard library: `dno --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

OPTION = "dno.option"  # field metadata key: the Option
GROUP = "dno.group"  # field metadata key: a nested group (Group)
CHANGES_OUTPUT = "changes_output"  # field metadata key read by dno_data.lineage (False: left out of the fingerprint)

UNSET = object()
Check = Callable[[Any], None]  # check(value) raises ValueError(reason) on a bad value


@dataclass(frozen=True)
class Option:
    help: str
    flags: tuple[str, ...] = ()  # e.g. ("-o", "--output"); default: --<prefix><field-name>
    argument: bool = False  # a positional argument
    changes_output: bool = True  # False: operational, left out of the lineage fingerprint
    check: Check | None = None
    normalize: Callable[[Any], Any] | None = None  # a value as given -> the config's value (idempotent)
    none_word: str | None = None  # the command-line word for None
    cli_type: Any = None  # what the command line parses when the field's type is not one it reads
    panel: str | None = None  # help panel of a shared group
    aliases: tuple[str, ...] = ()  # old flags still accepted, hidden from --help
    name: str | None = None  # the option's name whatever the group's prefix (e.g. --judge in any group)
    stage_options: str | None = None  # a mapping of another command's options, given as one string of its flags

    def field(self, default: Any = MISSING, *, factory: Any = MISSING, **changes) -> Any:
        """A dataclass field declared by this option (changes: e.g. help=..., check=...)."""
        o = dataclasses.replace(self, **changes) if changes else self
        return dataclasses.field(default=default, default_factory=factory,
                                 metadata={OPTION: o, CHANGES_OUTPUT: o.changes_output})


def opt(help: str, default: Any = MISSING, *, factory: Any = MISSING, **kw) -> Any:
    """A field with an option of its own."""
    return Option(help, **kw).field(default, factory=factory)


@dataclass(frozen=True)
class Group:
    cls: type
    prefix: str = ""  # the flags of its fields: --<prefix><name> (e.g. judge_ in dno eval: --judge-temperature)
    aliases: dict | None = None  # field -> old flags of this group in this command, hidden from --help
    exclude: tuple[str, ...] = ()  # fields this command does not offer (they keep their defaults)


def group(cls: type, *, prefix: str = "", factory: Callable[[], Any] | None = None, aliases: dict | None = None,
          exclude: tuple[str, ...] = ()) -> Any:
    """A field holding a nested group of options (a Config), flattened to flags on the command line;
    `factory` gives this command's defaults of the group (e.g. greedy sampling in dno eval), `exclude`
    the fields it does not offer (dno sft: the contrastive ones)."""
    meta = {GROUP: Group(cls, prefix, aliases, exclude)}
    required = any(f.default is MISSING and f.default_factory is MISSING for f in dataclasses.fields(cls))
    if factory is None and required:  # e.g. the judge's spec: the command must be given it
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default_factory=factory or cls, metadata=meta)


# ---------------------------------------------------------------- checks: check(value) raises ValueError(reason)

def _num(v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or math.isinf(v):
        raise ValueError("expected a finite number")
    return v


def finite(v) -> None:
    if v is not None:
        _num(v)


def at_least(lo: float, why: str = "") -> Check:
    def check(v):
        if v is not None and _num(v) < lo:
            raise ValueError(f"must be at least {lo:g}{why}")
    return check


def above(lo: float, why: str = "") -> Check:
    def check(v):
        if v is not None and _num(v) <= lo:
            raise ValueError(f"must be greater than {lo:g}{why}")
    return check


def in_range(lo: float, hi: float, lo_open: bool = False, why: str = "") -> Check:
    def check(v):
        if v is None:
            return
        x = _num(v)
        if x > hi or x < lo or (lo_open and x == lo):
            raise ValueError(f"must be in {'(' if lo_open else '['}{lo:g}, {hi:g}]{why}")
    return check


def one_of(*choices: str) -> Check:
    def check(v):
        if v is not None and v not in choices:
            raise ValueError(f"choose one of {', '.join(choices)}")
    return check


def url(v) -> None:
    if v is None:
        return
    parts = urlsplit(str(v))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s) URL such as http://127.0.0.1:8000/v1")


def nonempty(v) -> None:
    if v is not None and not str(v).strip():
        raise ValueError("must not be empty")


def all_of(*checks: Check) -> Check:
    def check(v):
        for c in checks:
            c(v)
    return check


def output_file(v) -> None:
    """An output file: not a folder, in a folder that exists or can be made, and writable."""
    if v is None or _url(v):
        return
    from ..paths import describe

    p = Path(v)
    if p.is_dir():
        raise ValueError(f"is {describe(p)}; pass a file path")
    _writable_parent(p)


def output_folder(v) -> None:
    """An output folder (a checkpoint): not an existing file, its parent writable."""
    if _url(v):  # checked where it is written (dno_data.staging)
        return
    from ..paths import describe

    p = Path(v)
    if (p.exists() or p.is_symlink()) and not p.is_dir():
        raise ValueError(f"is {describe(p)}; pass a folder path")
    _writable_parent(p)


def _url(v) -> bool:
    from ..storage import is_url

    return is_url(v)


def local_path(v) -> None:
    """A path on this machine's disk: not an object-storage URL (a SQLite file, a folder a command writes in place)."""
    if _url(v):
        raise ValueError("must be a local path (object storage holds artifacts and checkpoints, not this)")


def _writable_parent(p: Path) -> None:
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"cannot be written ({parent} is a file, not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot be written (no write permission in {parent})")


# transformers' SchedulerType values (tests/test_options.py checks the list against transformers, so it cannot
# drift); a list here keeps config checks from importing transformers and torch.
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                 "warmup_stable_decay", "greedy")


def lr_scheduler_name(v) -> None:
    if v not in LR_SCHEDULERS:
        raise ValueError(f"not a transformers scheduler; choose one of {', '.join(LR_SCHEDULERS)}")


# ---------------------------------------------------------------- normalizers (idempotent)

def as_tuple(v) -> tuple:
    if v is None:
        return ()
    if isinstance(v, (str, bytes)):
        return (v,)
    return tuple(v)


def comma_list(v) -> tuple[str, ...]:
    """`a,b` or a list of names -> a tuple of names."""
    if isinstance(v, str):
        return tuple(m.strip() for m in v.split(",") if m.strip())
    return as_tuple(v)


def seed_list(v) -> tuple[int, ...] | None:
    """`0,1,2` (or a list of ints) -> (0, 1, 2); None stays None.

    >>> seed_list("0, 1,2"), seed_list([3]), seed_list(None)
    ((0, 1, 2), (3,), None)
    """
    if v is None or isinstance(v, tuple) and all(isinstance(x, int) for x in v):
        return v
    items = [x.strip() for x in v.split(",")] if isinstance(v, str) else list(v)
    try:
        seeds = tuple(int(x) for x in items if x != "")
    except ValueError:
        raise ValueError("give comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError("give distinct integers, e.g. 0,1,2")
    return seeds


STAGE_OPTIONS = "Options per stage (one shell-quoted string each; a table per stage in --config)"


def stage_options(stage: str, example: str = "", default: Any = MISSING, note: str = "") -> Any:
    """A field holding one stage's options (dno iterate, compare): a dict of its option names in Python,
    a string of its flags on the command line (`--train-args "--beta 0.1"`), a `[train]` table in a run
    config file."""
    return opt(f"dno {stage} options{', e.g. ' + example if example else ''}{' ' + note if note else ''}.",
               default, factory=dict if default is MISSING else MISSING,
               flags=(f"--{stage}-args",), cli_type=str, stage_options=stage, panel=STAGE_OPTIONS)
