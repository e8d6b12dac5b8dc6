"""The run config file (`--config run.toml`): a table per command, `dno iterate`'s options at the top level.

    # run.toml
    run = "runs/r1"                 # dno iterate's options
    model = "models/sft"
    judge = "oracle:addition"
    [sample]                        # a table per command: its options by name (dashes or underscores)
    k = 4
    [train]
    beta = 0.1
    [model.import-gguf]             # a sub-command's table
    dtype = "bfloat16"

Every key of every table is checked against its command's options when any command reads the
file, so a typo is one line naming the file and the key. A command's own table becomes its
defaults (flags on the command line override them). For `dno iterate` and `dno compare` the
stage tables ([sample], [judge], [pairs], [train], [eval], [sft]) are each stage's options,
checked here value by value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DnoError
from .base import check_option, option_names

LOOP_COMMANDS = ("iterate", "compare")  # commands that take the stage tables as their stages' options


def _commands() -> dict[str, Any]:
    """command (or group) name -> its config class, or for a group {sub-command: config class}."""
    from ..stages import STAGES, load

    out: dict[str, Any] = {}
    for name in STAGES:
        cls = load(name)[0]
        if " " in name:
            group, sub = name.split(" ", 1)
            out.setdefault(group, {})[sub] = cls
        else:
            out[name] = cls
    return out


def _key(k: str) -> str:
    return str(k).replace("-", "_")


def _no_option_twice(path: Path, where: str, table: dict) -> None:
    """Dashes and underscores name the same option: a table that gives one option both ways is refused
    (TOML sees two keys, and the last one would silently win)."""
    seen: dict[str, str] = {}
    for k, v in table.items():
        if isinstance(v, dict):
            continue
        if _key(k) in seen:
            at = f"[{where}] " if where else ""
            raise DnoError(f"{path}: {at}{seen[_key(k)]!r} and {k!r} are the same option given twice; keep one")
        seen[_key(k)] = k


def _check_table(path: Path, where: str, table: dict, cls) -> None:
    _no_option_twice(path, where, table)
    if isinstance(cls, dict):  # a group of sub-commands
        for k, v in table.items():
            if k not in cls or not isinstance(v, dict):
                raise DnoError(f"{path}: unknown key [{where}] {k!r}; dno {where} takes: {', '.join(cls)}")
            _check_table(path, f"{where}.{k}", v, cls[k])
        return
    names = set(option_names(cls))
    for k in table:
        if _key(k) not in names:
            known = ", ".join(sorted(n.replace("_", "-") for n in names))
            raise DnoError(f"{path}: unknown key [{where}] {k!r}; dno {where.replace('.', ' ')} takes: {known}")


def read_run_file(path: Path, command: str) -> dict:
    """{"values": this command's options from the file, "tables": the stage tables (checked, for the loop commands)}."""
    import tomllib

    from ..paths import check_input

    try:
        check_input(path, "config")
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DnoError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise DnoError(f"{path}: not a readable TOML file ({e})") from None
    commands = _commands()
    top = {k: v for k, v in data.items() if not (isinstance(v, dict) and k in commands)}
    _no_option_twice(path, "", top)
    names = set(option_names(commands["iterate"]))
    for k in top:
        if _key(k) not in names:
            raise DnoError(f"{path}: unknown key {k!r}: not an option of dno iterate nor a command's table "
                           f"({', '.join(commands)})")
    for k, v in data.items():
        if k not in top:
            _check_table(path, k, v, commands[k])
    parts = command.split()
    values = dict(top) if parts == ["iterate"] else {}
    table: Any = data
    for n in parts:
        table = table.get(n, {}) if isinstance(table, dict) else {}
    values.update(table if isinstance(table, dict) else {})
    tables = {}
    if parts and parts[0] in LOOP_COMMANDS:
        for stage in ("sample", "judge", "pairs", "train", "eval", "sft"):
            given = data.get(stage)
            if isinstance(given, dict):
                tables[stage] = {_key(k): check_option(commands[stage], _key(k), v, where=f"{path} [{stage}]")
                                 for k, v in given.items()}
    return {"values": {_key(k): v for k, v in values.items()}, "tables": tables}
