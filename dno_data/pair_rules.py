"""The pair rules: one `dno_data/sql/rule_*.sql` file each, its rules and parameters declared in its header.

    -- @rule paper: every positive, DNO section 5                    a rule name and its help
    -- @rule paper-best best_only: only the best positive of a prompt  ... and a flag it sets to true
    -- @param teacher_margin float 2.0 >=0: Score gap of a negative ...   $teacher_margin: type, default, check, help

A parameter's type is float, int, str or bool (a `?` admits null); its default is JSON; its check
is `finite`, `>=x`, `>x`, `[a,b]` or `a|b|c`. `dno pairs` offers `--rule NAME` for every rule
and `--NAME` for every parameter (its help and check from the header): a new rule is one new file.
Standard library only (the pairs command's options load without DuckDB).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from .config import Config, Option, above, at_least, finite, in_range, one_of
from .errors import DnoError

TRUNCATED = ("negative", "drop", "keep")  # what a sample cut at the length limit is (candidates.sql)
# DuckDB's memory limit for `dno pairs` ("auto": by rule); it spills to disk beyond (the whole process takes about
# 0.5-0.7 GB more). Measured with bench/bench_pairs.py on 2 shared cores, the n-gram check included: best-worst at
# 1M prompts x 6 chat-length answers (1.5k characters) 42.3 s and a peak RSS of 1.74 GB at 1GB (40.4 s, 2.19 GB at
# 1.5GB); at 1M x 6 short answers 12.5 s, 1.58 GB. The paper rule (5.85M pairs of short answers) 28.6 s, 2.09 GB
# at 1.5GB (27.8 s but 3.55 GB at 3GB, 30.3 s at 1GB): its joins carry ids only, the texts come last.
DEFAULT_MEMORY_LIMIT = "auto"
AUTO_MEMORY_LIMIT = {"best-worst": "1GB", "paper": "1.5GB", "paper-best": "1.5GB", "sql": "1.5GB"}  # sql: a --sql rule
PANEL = "Pair rule parameters (--rule)"

_RULE = re.compile(r"^--\s*@rule\s+([a-z0-9][a-z0-9-]*)((?:\s+[a-z_]+)*)\s*:\s*(.+)$")
_PARAM = re.compile(r"^--\s*@param\s+([a-z_][a-z0-9_]*)\s+(float|int|str|bool)(\??)\s+(\S+)(?:\s+(\S+))?\s*:\s*(.+)$")
_TYPES = {"float": float, "int": int, "str": str, "bool": bool}


@dataclass(frozen=True)
class Rule:
    name: str
    file: str  # the .sql file's name without the suffix
    help: str
    flags: tuple[str, ...] = ()  # parameters this rule sets to true (e.g. best_only)


@dataclass(frozen=True)
class Param:
    name: str
    type: Any
    default: Any
    check: Any
    help: str


def _check(spec: str | None):
    if spec is None:
        return None
    if spec == "finite":
        return finite
    if spec.startswith(">="):
        return at_least(float(spec[2:]))
    if spec.startswith(">"):
        return above(float(spec[1:]))
    if spec.startswith("[") and spec.endswith("]"):
        lo, hi = (float(x) for x in spec[1:-1].split(","))
        return in_range(lo, hi)
    if "|" in spec:
        return one_of(*spec.split("|"))
    raise ValueError(f"unknown check {spec!r}")


def parse_header(text: str, file: str) -> tuple[list[Rule], list[Param]]:
    """The @rule and @param lines of a rule file's leading comment."""
    rules, params = [], []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        if m := _RULE.match(line):
            rules.append(Rule(m[1], file, m[3].strip(), tuple(m[2].split())))
        elif m := _PARAM.match(line):
            name, typ, nullable, default, check, help_ = m.groups()
            hint = _TYPES[typ] | None if nullable else _TYPES[typ]
            params.append(Param(name, hint, json.loads(default), _check(check), help_.strip()))
    return rules, params


@functools.cache
def registry(folder=None) -> tuple[dict[str, Rule], dict[str, Param]]:
    """Every rule and parameter, from the headers of the rule_*.sql files in `folder` (default: dno_data/sql)."""
    rules: dict[str, Rule] = {}
    params: dict[str, Param] = {}
    folder = resources.files("dno_data").joinpath("sql") if folder is None else folder
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.startswith("rule_") and entry.name.endswith(".sql"):
            found_rules, found_params = parse_header(entry.read_text(), entry.name.removesuffix(".sql"))
            for r in found_rules:
                rules[r.name] = r
            for p in found_params:
                if p.name in params and params[p.name] != p:
                    raise TypeError(f"{entry.name}: parameter {p.name} is declared differently in another rule file")
                params[p.name] = p
    return rules, params


RULES: tuple[str, ...] = tuple(sorted(registry()[0], key=lambda n: (n != "paper", n)))  # paper first (the default)
DEFAULT_PARAMS: dict[str, Any] = {p.name: p.default for p in registry()[1].values()}


def _params_class() -> type:
    fields = [(p.name, p.type, Option(p.help, check=p.check, panel=PANEL).field(p.default))
              for p in registry()[1].values()]
    cls = dataclasses.make_dataclass("RuleParams", fields, bases=(Config,), frozen=True, kw_only=True)
    cls.__module__ = __name__
    cls.__doc__ = "The pair rules' parameters, from the rule files' headers (`$name` in the SQL)."
    return cls


RuleParams = _params_class()


def rule_help() -> str:
    rules = registry()[0]
    return " | ".join(f"{name} ({rules[name].help})" for name in RULES)


def rule_sql(rule: str) -> tuple[str, dict[str, bool]]:
    """A shipped rule's SQL text and the flags it sets (e.g. paper-best: best_only); DnoError when unknown."""
    from .duckdb_sql import load_sql

    rules = registry()[0]
    if rule not in rules:
        raise DnoError(f"--rule {rule!r}: choose one of {', '.join(RULES)}, or pass --sql FILE")
    r = rules[rule]
    all_flags = {f for x in rules.values() if x.file == r.file for f in x.flags}
    return load_sql(r.file), {f: f in r.flags for f in all_flags}


def memory_limit_for(memory_limit: str | None, rule: str, sql_file=None) -> str | None:
    """The DuckDB memory limit `dno pairs` runs under: `memory_limit` as given, or for "auto" the rule's."""
    if memory_limit != "auto":
        return memory_limit
    return AUTO_MEMORY_LIMIT.get("sql" if sql_file is not None else rule, AUTO_MEMORY_LIMIT["sql"])
