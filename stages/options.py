"""Every command-line option declared once: its flags, help, check, and whether it changes the output.

A stage's Config dataclass lists its fields with `opt(...)`, or with a shared declaration such
as `BASE_URL.field(None)`, and `build_command(Config, run)` turns those fields into the Typer
command: the help text, the value checks and the lineage flag live on the field, nowhere else.

    @dataclass(frozen=True)
    class JudgeConfig:
        samples: Path = opt("samples.parquet (from `dno sample`).", argument=True)
        concurrency: int = CONCURRENCY.field(16)
        ...
    command = build_command(JudgeConfig, run)

- `changes_output=False` marks a setting of how a stage runs (concurrency, cache path, output
  path...), not of what it makes: dno_data.artifacts leaves it out of the lineage fingerprint,
  so a rerun with other such settings still resumes and counts as up to date.
- `check` refuses a bad value with a one-line error before any work starts.
- `aliases` are old flags still accepted and hidden from --help, so each thing has one name.
- Every command built here takes `--config run.toml` (a table per command; dno iterate's options
  at the top level): an eager option that makes the file's values the command's defaults, so
  flags on the command line override them and the values go through the flags' own checks.
- Groups shared by several commands (API settings, model loading, sampling) map field names
  to their one declaration below; tests assert that each command taking an `openai:` spec
  declares every field of API_OPTIONS with it and passes the values through.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Annotated, Any, Optional
from urllib.parse import urlsplit

import typer

from dno_data.errors import DnoError
from dno_data.paths import check_input, describe

from .common import one_line_errors

OPTION = "option"  # field metadata key: the Option
CHANGES_OUTPUT = "changes_output"  # field metadata key read by dno_data.artifacts (False: left out of the fingerprint)

UNSET = object()  # no CLI default of its own: the field's
Check = Callable[[str, Any], None]  # check(flag, value) raises DnoError on a bad value


@dataclass(frozen=True)
class Option:
    help: str
    flags: tuple[str, ...] = ()  # e.g. ("-o", "--output"); default: --field-name
    argument: bool = False  # a positional argument
    changes_output: bool = True  # False: operational, left out of the lineage fingerprint
    check: Check | None = None
    cli_type: Any = None  # what Typer parses when the field's type is not one it knows (unions, tuples)
    cli_default: Any = UNSET  # the default Typer shows, when it differs from the field's
    to_config: Callable[[Any], Any] | None = None  # parsed value -> the config's value
    panel: str | None = None  # help panel of a shared group
    aliases: tuple[str, ...] = ()  # old flags still accepted, hidden from --help (one name is shown)

    def field(self, default: Any = MISSING, *, factory: Any = MISSING, **changes) -> Any:
        """A dataclass field declared by this option (changes: e.g. help=..., check=...)."""
        o = dataclasses.replace(self, **changes) if changes else self
        return dataclasses.field(default=default, default_factory=factory,
                                 metadata={OPTION: o, CHANGES_OUTPUT: o.changes_output})


def opt(help: str, default: Any = MISSING, *, factory: Any = MISSING, **kw) -> Any:
    """A field with a one-command option."""
    return Option(help, **kw).field(default, factory=factory)


# ---------------------------------------------------------------- checks

def _num(flag: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or math.isinf(v):
        raise DnoError(f"{flag} {v!r}: expected a finite number")
    return v


def at_least(lo: float) -> Check:
    def check(flag, v):
        if v is not None and _num(flag, v) < lo:
            raise DnoError(f"{flag} {v!r}: must be at least {lo:g}")
    return check


def above(lo: float) -> Check:
    def check(flag, v):
        if v is not None and _num(flag, v) <= lo:
            raise DnoError(f"{flag} {v!r}: must be greater than {lo:g}")
    return check


def in_range(lo: float, hi: float, lo_open: bool = False) -> Check:
    def check(flag, v):
        if v is None:
            return
        x = _num(flag, v)
        if x > hi or x < lo or (lo_open and x == lo):
            raise DnoError(f"{flag} {v!r}: must be in {'(' if lo_open else '['}{lo:g}, {hi:g}]")
    return check


def finite(flag, v) -> None:
    if v is not None:
        _num(flag, v)


def one_of(*choices: str) -> Check:
    def check(flag, v):
        if v is not None and v not in choices:
            raise DnoError(f"{flag} {v!r}: choose one of {', '.join(choices)}")
    return check


def url(flag: str, v) -> None:
    if v is None:
        return
    parts = urlsplit(str(v))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DnoError(f"{flag} {str(v)!r}: expected an http(s) URL such as http://127.0.0.1:8000/v1")


def nonempty(flag: str, v) -> None:
    if v is not None and not str(v).strip():
        raise DnoError(f"{flag}: must not be empty")


def output_file(flag: str, v) -> None:
    """An output file: not a folder, in a folder that exists or can be made, and writable."""
    if v is None:
        return
    p = Path(v)
    if p.is_dir():
        raise DnoError(f"{p}: is {describe(p)}; pass a file path to {flag}")
    _writable_parent(flag, p)


def output_folder(flag: str, v) -> None:
    """An output folder (a checkpoint): not an existing file, its parent writable."""
    p = Path(v)
    if p.exists() and not p.is_dir():
        raise DnoError(f"{p}: is {describe(p)}; pass a folder path to {flag}")
    _writable_parent(flag, p)


def _writable_parent(flag: str, p: Path) -> None:
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise DnoError(f"{p}: cannot be written ({parent} is a file, not a folder); choose another {flag}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DnoError(f"{p}: cannot be written (no write permission in {parent}); choose another {flag}")


def lr_scheduler_name(flag: str, v) -> None:
    from transformers import SchedulerType

    names = [s.value for s in SchedulerType]
    if v not in names:
        raise DnoError(f"{flag} {v!r}: not a transformers scheduler; choose one of {', '.join(names)}")


def flag_of(name: str, o: Option) -> str:
    if o.argument:
        return name.upper()
    return next((f for f in o.flags if f.startswith("--")), "--" + name.replace("_", "-"))


def check_config(cfg) -> None:
    """Run every field's check: the first bad value is a DnoError naming its flag."""
    for f in dataclasses.fields(cfg):
        o = f.metadata.get(OPTION)
        if o is not None and o.check is not None:
            o.check(flag_of(f.name, o), getattr(cfg, f.name))


def changes_output(config_cls, name: str) -> bool:
    return next(f for f in dataclasses.fields(config_cls) if f.name == name).metadata.get(CHANGES_OUTPUT, True)


# ---------------------------------------------------------------- conversions

def none_if(word: str) -> Callable[[Any], Any]:
    """A CLI word that stands for None (e.g. --split all, --teacher none)."""
    return lambda v: None if v == word else v


def as_tuple(v) -> tuple:
    return tuple(v or ())


def shell_args(flag: str) -> Callable[[str], tuple[str, ...]]:
    """A shell-quoted string of options passed through to a stage (--train-args "--beta 0.1")."""
    import shlex

    def parse(v: str) -> tuple[str, ...]:
        try:
            return tuple(shlex.split(v or ""))
        except ValueError as e:
            raise DnoError(f"{flag} {v!r}: {e}") from None
    return parse


# ---------------------------------------------------------------- shared declarations

API = "OpenAI-compatible API (openai: specs)"
MODEL_LOADING = "Model loading"
SAMPLING = "Sampling"

OUTPUT_FILE = Option("Parquet file to write.", flags=("-o", "--output"), changes_output=False, check=output_file)
FORCE = Option("Redo: even when the output is up to date, discarding unfinished work of other inputs or "
               "settings.", changes_output=False, aliases=("--fresh", "--overwrite"))

# The API settings of every command that takes an `openai:` spec.
BASE_URL = Option("OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 "
                  "(default: $OPENAI_BASE_URL or api.openai.com).", changes_output=False, check=url, panel=API)
API_KEY_ENV = Option("Name of the environment variable holding the API key (the key itself is never stored).",
                     changes_output=False, check=nonempty, panel=API)
CONCURRENCY = Option("Requests in flight.", changes_output=False, check=at_least(1), panel=API)
RPM = Option("Requests-per-minute limit.", changes_output=False, check=above(0), panel=API)
TPM = Option("Tokens-per-minute limit.", changes_output=False, check=above(0), panel=API)
TIMEOUT = Option("Seconds per request attempt.", changes_output=False, check=above(0), panel=API)
API_TIMEOUT = 120.0  # the default of --timeout, the same for every command
MAX_RETRIES = Option("Retries on 429/5xx/timeouts (backoff with jitter, Retry-After).", changes_output=False,
                     check=at_least(0), panel=API)
CACHE = Option("SQLite cache of API calls, keyed by request content (default: sample none; judge and eval "
               "$DNO_CACHE or ~/.cache/dno/judge.sqlite).", changes_output=False, panel=API)
NO_CACHE = Option("Do not read or write the call cache.", changes_output=False, panel=API)
API_OPTIONS = {"base_url": BASE_URL, "api_key_env": API_KEY_ENV, "concurrency": CONCURRENCY, "rpm": RPM, "tpm": TPM,
               "timeout": TIMEOUT, "max_retries": MAX_RETRIES, "cache": CACHE, "no_cache": NO_CACHE}


def api_settings(cfg, base_url: Any = UNSET):
    """The ApiSettings of a config declaring API_OPTIONS (checked on construction); `base_url`
    overrides the config's, e.g. for a teacher on another server."""
    from dno_data.openai_api.runner import ApiSettings

    return ApiSettings(base_url=cfg.base_url if base_url is UNSET else base_url, api_key_env=cfg.api_key_env,
                       concurrency=cfg.concurrency, rpm=cfg.rpm, tpm=cfg.tpm, timeout=cfg.timeout,
                       max_retries=cfg.max_retries)

# Loading a local model.
DTYPES = ("auto", "float32", "bfloat16", "float16")
DTYPE = Option(f"Model dtype: {'|'.join(DTYPES)}.", check=one_of(*DTYPES), panel=MODEL_LOADING)
THREADS = Option("torch CPU threads (float sums depend on it: runs agree with runs of the same count).",
                 changes_output=False, check=at_least(1), panel=MODEL_LOADING)
MODEL_OPTIONS = {"dtype": DTYPE, "threads": THREADS}

# Sampling from the policy.
TEMPERATURE = Option("Sampling temperature (0 = greedy).", check=at_least(0), panel=SAMPLING)
TOP_P = Option("Nucleus sampling top-p, in (0, 1].", check=in_range(0, 1, lo_open=True), panel=SAMPLING)
MAX_NEW_TOKENS = Option("Longest response in tokens.", check=at_least(1), panel=SAMPLING)
SEED = Option("Sampling seed (each prompt's samples are seeded from it and the prompt_id).", panel=SAMPLING)
SAMPLING_OPTIONS = {"temperature": TEMPERATURE, "top_p": TOP_P, "max_new_tokens": MAX_NEW_TOKENS, "seed": SEED}

# The teacher ("gold") answer.
TEACHER_TEMPERATURE = Option("openai teacher: temperature.", check=at_least(0), panel=API)
TEACHER_MAX_NEW_TOKENS = Option("openai teacher: longest answer in tokens.", check=at_least(1), panel=API,
                                aliases=("--teacher-max-tokens",))

# The judge's prompt (openai: judges).
JUDGE_MODES = ("score", "pairwise", "rubric")
MODE = Option("Judge mode: openai: rubric|pairwise; python: score|pairwise.", check=one_of(*JUDGE_MODES))
TEMPLATE = Option("openai judges: Jinja template of the judge prompt.", panel=API)
SYSTEM_PROMPT = Option("openai judges: system message for the judge.", panel=API)

JUDGE_TEMPERATURE = Option("openai judges: the judge's sampling temperature.", check=at_least(0), panel=API)
JUDGE_MAX_NEW_TOKENS = Option("openai judges: longest judge answer in tokens.", check=at_least(1), panel=API,
                              aliases=("--max-tokens",))
LOGPROBS = Option("openai pairwise judges: P from the verdict token's logprobs.", panel=API)
BOTH_ORDERS = Option("Pairwise: judge (a,b) and (b,a).")

TEACHER_SPECS = "reference | python:module:function | openai:MODEL"


def judge_specs() -> str:
    """Every judge spec the judges accept (the oracles from their registry), for help texts."""
    from dno_data.judges.oracles import ORACLES

    return " | ".join(["openai:MODEL", "reward:PATH", *(f"oracle:{k}" for k in ORACLES), "python:module:function"])


JUDGE = Option(f"The preference oracle: {judge_specs()}.")

# ---------------------------------------------------------------- run config file (--config run.toml)

CONFIG = Option("Run config file (TOML): a table per command with its options, e.g. [train] beta = 0.1, "
                "and dno iterate's options at the top level; flags on the command line override it.",
                flags=("--config",), changes_output=False)


def _fail(msg: str):
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(1)


def _command_path(ctx) -> list[str]:
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return names[::-1]


def _key(k: str) -> str:
    return k.replace("-", "_")


def _check_table(path: Path, where: str, table: dict, command, commands: tuple[str, ...] = ()) -> None:
    """Every key of `table` is an option of `command` (a click command) or, for a group, a table of a
    sub-command; `commands`: the tables allowed beside dno iterate's options at the top level."""
    subs = getattr(command, "commands", None) or {}
    params = {p.name for p in command.params if p.name != "config" and not p.name.startswith(ALIAS)}
    for k, v in table.items():
        if k in subs and isinstance(v, dict):
            _check_table(path, f"{where}{k}.", v, subs[k])
        elif _key(k) not in params:
            if not where and commands:
                _fail(f"{path}: unknown key {k!r}: not an option of dno iterate nor a command's table "
                      f"({', '.join(commands)})")
            known = ", ".join(sorted(subs) if subs else sorted(p.replace("_", "-") for p in params))
            what = f"[{where[:-1]}] " if where else ""
            _fail(f"{path}: unknown key {what}{k!r}; dno {where[:-1].replace('.', ' ')} takes: {known}")


def read_run_config(path: Path, ctx) -> dict:
    """This command's options from the run config file, checked against every command's options."""
    import tomllib

    try:
        check_input(path, "config")
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except DnoError as e:
        _fail(str(e))
    except FileNotFoundError:
        _fail(f"{path}: no such config file")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        _fail(f"{path}: not a readable TOML file ({e})")
    commands = getattr(ctx.find_root().command, "commands", None) or {}
    top = {k: v for k, v in data.items() if not (isinstance(v, dict) and k in commands)}
    if top and "iterate" in commands:
        _check_table(path, "", top, commands["iterate"], tuple(commands))
    for k, v in data.items():
        if k not in top:
            _check_table(path, f"{k}.", v, commands[k])
    names = _command_path(ctx)
    section = dict(top) if names == ["iterate"] else {}
    table = data
    for n in names:
        table = table.get(n, {}) if isinstance(table, dict) else {}
    section.update(table if isinstance(table, dict) else {})
    return {_key(k): v for k, v in section.items()}


def _load_config(ctx, param, value):
    """Eager --config: the file's values become the command's defaults (click's default_map), so
    flags on the command line override them and the checks and conversions are the flags' own."""
    if value is None:
        return value
    values = read_run_config(Path(value), ctx)
    by_name = {p.name: p for p in ctx.command.params}
    for name, v in values.items():
        p = by_name[name]
        if isinstance(v, list) and not (p.multiple or p.nargs != 1):  # e.g. sample_args = ["-k", "4"]
            import shlex

            values[name] = shlex.join(map(str, v))
        try:
            p.get_runtime_param().coerce(values[name], param=p, ctx=ctx)  # the flag's own conversion
        except Exception as e:  # click's BadParameter: the flag's own conversion
            _fail(f"{value}: {'.'.join(_command_path(ctx))} {name.replace('_', '-')} = {v!r}: "
                  f"{getattr(e, 'message', None) or e}")
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


# ---------------------------------------------------------------- Config -> Typer command

def _optional(t):
    return Optional[t]


def _cli_type(field_type):
    """Typer's type for a dataclass field type: `X | None` -> Optional[X]."""
    args = typing.get_args(field_type)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _optional(rest[0])
    return field_type


ALIAS = "alias__"  # the parameter of a field's hidden old flags: alias__<field>


def _config_info(o: Option):
    return typer.Option(*(o.flags or ("--config",)), help=o.help, is_eager=True, callback=_load_config,
                        rich_help_panel=o.panel)


def build_command(config_cls, run: Callable, doc: str | None = None) -> Callable:
    """The Typer command of a stage: one parameter per field of `config_cls` (its Option says how),
    every check run on the parsed config, then `run(config)`; a DnoError is one `error:` line."""
    hints = typing.get_type_hints(config_cls)
    params, annotations, fields = [], {}, []
    for f in dataclasses.fields(config_cls):
        o: Option | None = f.metadata.get(OPTION)
        if o is None:
            raise TypeError(f"{config_cls.__name__}.{f.name}: declare it with opt(...) or a shared Option")
        typ = o.cli_type or _cli_type(hints[f.name])
        default = f.default if o.cli_default is UNSET else o.cli_default
        if o.argument:
            info = typer.Argument(help=o.help, metavar=f.name.upper(), show_default=default is not MISSING)
        elif f.name == "config":
            info = _config_info(o)
        else:
            flags = o.flags
            if not flags and typ is bool and default is False:  # an on-switch: --force, not --force/--no-force
                flags = ("--" + f.name.replace("_", "-"),)
            info = typer.Option(*flags, help=o.help, rich_help_panel=o.panel)
        ann = Annotated[typ, info]
        annotations[f.name] = ann
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=ann,
                                        default=inspect.Parameter.empty if default is MISSING else default))
        fields.append((f.name, o))
        if o.aliases:  # hidden: --help shows one name
            alias_typ = typ if typ is bool else _optional(typ)
            alias_info = typer.Option(*o.aliases, hidden=True)
            params.append(inspect.Parameter(ALIAS + f.name, inspect.Parameter.KEYWORD_ONLY,
                                            annotation=Annotated[alias_typ, alias_info],
                                            default=False if typ is bool else None))
            annotations[ALIAS + f.name] = params[-1].annotation

    names = [name for name, _ in fields]
    defaults = {p.name: p.default for p in params}

    def command(**parsed):
        for name, _ in fields:  # an old flag's value, unless the flag itself was given too
            old = parsed.pop(ALIAS + name, None)
            if old not in (None, False) and parsed[name] == defaults[name]:
                parsed[name] = old
        values = {name: (o.to_config(parsed[name]) if o.to_config else parsed[name]) for name, o in fields}
        cfg = config_cls(**values)
        check_config(cfg)
        return run(cfg)

    if "config" not in names:  # every command takes --config run.toml; a Config may declare it to use it
        o = CONFIG
        params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[Path], _config_info(o)]))
        annotations["config"] = params[-1].annotation
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = annotations
    command.__doc__ = doc or config_cls.__doc__
    command.__name__ = "command"
    return one_line_errors(command)
