"""Shards of a prompt selection, by key, and merging the shards' samples back into one file.

`--shard i/n` keeps the prompts whose hash of `prompt_id` is i mod n (0 <= i < n): each of n
jobs takes a disjoint part, the same part whatever the row order of the prompts file.
`merge_shards` checks the shards' lineage (same prompts file and settings, shard i/n of one n)
and that every prompt of the recorded selection (partition / split of that prompts file) is in
exactly one shard; a missing or doubled prompt is an error naming the prompt ids and files.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from .artifacts import read_artifact

from .lineage import outcome_config, read_lineage
from .errors import DnoError
from .ids import file_sha256, stable_hash

SHARD_KEYS = ("shard",)  # config keys that differ between the shards of one run


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """'i/n' -> (i, n), 0 <= i < n.

    >>> parse_shard("1/4")
    (1, 4)
    >>> parse_shard(None) is None
    True
    """
    if spec is None:
        return None
    i, sep, n = str(spec).partition("/")
    try:
        i, n = int(i), int(n)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise DnoError(f"--shard {spec!r}: expected i/n with 0 <= i < n, e.g. --shard 0/4 ... --shard 3/4")
    return i, n


def shard_of(prompt_id: str, n: int) -> int:
    """The shard (0..n-1) of a prompt: a hash of its key, never its row position.

    >>> shard_of("abc", 1)
    0
    """
    return int(stable_hash("shard", prompt_id), 16) % n


def in_shard(rows: list[dict], shard: tuple[int, int] | None) -> list[dict]:
    if shard is None:
        return rows
    i, n = shard
    return [r for r in rows if shard_of(r["prompt_id"], n) == i]


def _ids(ids, limit: int = 5) -> str:
    ids = sorted(ids)
    more = f" (+{len(ids) - limit} more)" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def merge_shards(shards: list[Path], prompts_override: Path | None) -> tuple[pa.Table, dict]:
    """The shards' rows in the order of an unsharded run, and the merged file's lineage.

    The sample stage's prompt selection (partition / split) is applied again to the prompts
    file the shards were made from, and every selected prompt must be in exactly one shard.
    """
    from .sampling import select_prompts

    if not shards:
        raise DnoError("nothing to merge: pass the shard files")
    lineages, tables = [], []
    for s in shards:
        tables.append(read_artifact(s, "samples"))
        lin = read_lineage(s)
        cfg = (lin or {}).get("config") or {}
        if not lin or lin.get("stage") != "sample" or not cfg.get("shard"):
            raise DnoError(f"{s}: not a shard of `dno sample` (its lineage has no --shard); "
                           "make shards with `dno sample ... --shard i/n`")
        lineages.append(lin)
    first, first_cfg = lineages[0], lineages[0]["config"]
    for s, lin in zip(shards[1:], lineages[1:]):
        if [i["sha256"] for i in lin["inputs"]] != [i["sha256"] for i in first["inputs"]]:
            raise DnoError(f"{s}: made from other inputs (prompts file or model) than {shards[0]}; "
                           "merge shards of one run only")
        mine, theirs = outcome_config(lin), outcome_config(first)
        diff = sorted(k for k in set(mine) | set(theirs) if k not in SHARD_KEYS and mine.get(k) != theirs.get(k))
        if diff:
            raise DnoError(f"{s}: made with other settings than {shards[0]} ({', '.join(diff)}); "
                           "merge shards of one run only")

    prompts_entry = first["inputs"][0]
    prompts_path = Path(prompts_override or prompts_entry["path"])
    if not prompts_path.exists():
        raise DnoError(f"{prompts_path}: the shards' prompts file is not there; pass --prompts PATH to its copy")
    if file_sha256(prompts_path) != prompts_entry["sha256"]:
        raise DnoError(f"{prompts_path}: not the prompts file the shards were made from (its content changed); "
                       "pass --prompts PATH to the original")
    selection = select_prompts(read_artifact(prompts_path, "prompts"), prompts_path, first_cfg.get("partition"),
                       first_cfg.get("split"))
    order = {r["prompt_id"]: k for k, r in enumerate(selection)}

    files_of: dict[str, list[str]] = defaultdict(list)
    for s, t in zip(shards, tables):
        for pid in set(t["prompt_id"].to_pylist()):
            files_of[pid].append(str(s))
    missing = set(order) - set(files_of)
    doubled = {pid: fs for pid, fs in files_of.items() if len(fs) > 1}
    foreign = set(files_of) - set(order)
    problems = []
    if missing:
        problems.append(f"{len(missing)} prompt(s) of the selection in no shard: {_ids(missing)}")
    if doubled:
        files = sorted({f for fs in doubled.values() for f in fs})
        problems.append(f"{len(doubled)} prompt(s) in more than one shard: {_ids(doubled)} (files: {', '.join(files)})")
    if foreign:
        files = sorted({f for pid in foreign for f in files_of[pid]})
        problems.append(f"{len(foreign)} prompt(s) not in the selection: {_ids(foreign)} (files: {', '.join(files)})")
    if problems:
        specs = ", ".join(f"{s} = shard {lin['config']['shard']}" for s, lin in zip(shards, lineages))
        raise DnoError(f"cannot merge {specs}: {'; '.join(problems)}; pass every shard i/n of one n exactly once "
                       "(rerun a missing shard with `dno sample ... --shard i/n`)")

    table = pa.concat_tables(tables)
    rank = [order[pid] for pid in table["prompt_id"].to_pylist()]
    # stable: rows of one prompt keep their order (K samples, then the teacher), as in an unsharded run
    idx = sorted(range(len(rank)), key=rank.__getitem__)
    table = table.take(pa.array(idx, type=pa.int64()))
    import datetime as _dt

    lineage = {**first, "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "config": {k: v for k, v in first_cfg.items() if k not in SHARD_KEYS},
               "merged_from": [{"path": str(s), "sha256": file_sha256(s), "shard": lin["config"]["shard"]}
                               for s, lin in zip(shards, lineages)]}
    lineage["config"]["shard"] = None
    return table, lineage
