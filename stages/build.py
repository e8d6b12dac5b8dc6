"""A stage's Typer command, made from its config (dno_data.config): one parameter per option of its flat view.

The help text, the check and the lineage flag live on the config's fields; this module only turns
them into a command line: `--temperature 0.5` for a field of a nested group, `--no-x` for a field
whose default is true, a repeated flag for a tuple, hidden flags for old names, and the eager
`--config run.toml` every command takes (its table becomes the command's defaults, so flags
override it). The parsed values build the config with `from_options`, which checks them; a
DnoError is one `error:` line and exit 1.

A field holding another stage's options (`dno iterate --train-args "--beta 0.1"`) is parsed here
with that stage's own command, all of its options optional, into a dict of the options given.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from dno_data.config import Flat, flat_fields, from_options
from dno_data.config.run_file import read_run_file
from dno_data.errors import DnoError, as_dno_error

ALIAS = "alias__"  # the parameter of a field's hidden old flags: alias__<name>
CTX = "ctx__"  # the click context, which Typer passes to a parameter annotated typer.Context
NOT_GIVEN = object()


def one_line_errors(fn: Callable) -> Callable:
    """Turn DnoError, and what the machine or a library's limits refused (a full disk, a read-only folder,
    the template sandbox, DuckDB's memory: dno_data.errors.as_dno_error), into one `error: ...` line on
    stderr and exit code 1, with no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            typer.echo("interrupted; rerun the same command to resume", err=True)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, BrokenPipeError):  # `dno sql ... | head`: click quiets a closed pipe
            raise
        except Exception as e:
            err = as_dno_error(e)
            if err is None:
                raise  # a bug: its traceback
            echo_error(str(err))
            raise typer.Exit(1) from None

    return wrapper


def echo_error(message: str) -> None:
    """The one `error:` line: a staging path as the URL it stands for, secrets in URLs redacted, one line."""
    from dno_data.redact import redact_text
    from dno_data.storage import public

    text = " ".join(redact_text(public(message)).split())
    typer.echo(f"error: {text}", err=True)


def _fail(msg: str):
    echo_error(msg)
    raise typer.Exit(1)


def _escape(text: str) -> str:
    """Help text as rich shows it literally: `[train]` is not markup. Every text a command's help is built
    from goes through here: its docstring, each option's help and panel title, --config's help."""
    return text.replace("[", "\\[")


# ---------------------------------------------------------------- one option -> one Typer parameter

def _cli_type(x: Flat):
    if x.option.cli_type is not None:
        t = x.option.cli_type
        return t if x.option.argument or typing.get_origin(t) is list else Optional[t]
    hint = x.hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return list[typing.get_args(hint)[0]]
    if args and typing.get_origin(hint) in (typing.Union, types.UnionType):
        if len(args) == 1:
            return Optional[_cli_type(Flat(x.name, x.path, x.option, args[0], x.default))]
    if x.option.none_word is not None:
        return Optional[str]
    return hint


def _path_type(x: Flat):
    """str for a path option: the command line passes its text as given (the help shows <path>); the config
    makes it a Path and keeps an s3:// URL as it is (a Path here would make it s3:/...)."""
    hint = x.hint
    args = typing.get_args(hint)
    return str if hint is Path or Path in args or (args and Path in typing.get_args(args[0])) else None


def _parameter(x: Flat, all_optional: bool) -> tuple[inspect.Parameter, list[inspect.Parameter]]:
    typ = _cli_type(x)
    default = _cli_default(x)  # a list, or another stage's options: None, not given unless on the command line
    cli_default = None if all_optional else default
    help_ = _escape(x.option.help)
    if x.option.argument:
        info = typer.Argument(help=help_, metavar=x.name.upper(), show_default=default not in (MISSING, None),
                              path_type=_path_type(x))
    else:
        flags = x.option.flags or ("--" + x.name.replace("_", "-"),)
        if typ is bool and default is not False:  # --x/--no-x; a switch that is off by default is one flag (--force)
            flags = tuple(f"{f}/--no-{f[2:]}" for f in flags if f.startswith("--"))
        panel = _escape(x.option.panel) if x.option.panel else None  # a panel's title is markup too
        info = typer.Option(*flags, help=help_, rich_help_panel=panel, path_type=_path_type(x),
                            show_default=not all_optional and default not in (None, MISSING, ""))
    if cli_default is MISSING:
        cli_default = inspect.Parameter.empty  # required
    param = inspect.Parameter(x.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[typ, info],
                              default=cli_default)
    extra = []
    if x.aliases:  # hidden: --help shows one name
        alias_typ = bool if typ is bool else (typ if typing.get_origin(typ) is list else Optional[typ])
        extra.append(inspect.Parameter(ALIAS + x.name, inspect.Parameter.KEYWORD_ONLY,
                                       annotation=Annotated[alias_typ, typer.Option(*x.aliases, hidden=True)],
                                       default=False if typ is bool else None))
    return param, extra


def _config_option():
    return typer.Option("--config", help=_escape("Run config file (TOML): a table per command with its options, "
                                                 "e.g. [train] beta = 0.1, and dno iterate's options at the top level; "
                                                 "flags on the command line override it."),
                        is_eager=True, callback=_load_config)


def _signature(cls: type, all_optional: bool = False) -> inspect.Signature:
    params = []
    for x in flat_fields(cls):
        param, extra = _parameter(x, all_optional)
        params += [param, *extra]
    if not all_optional:
        params.append(inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[Path], _config_option()]))
    params.append(inspect.Parameter(CTX, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))
    # Typer wants arguments with defaults after those without
    return inspect.Signature(sorted(params, key=lambda p: p.default is not inspect.Parameter.empty))


def _cli_default(x: Flat) -> Any:
    if typing.get_origin(_cli_type(x)) is list or x.option.stage_options or isinstance(x.default, (tuple, dict)):
        return None
    if x.default is None and x.option.none_word is not None:
        return x.option.none_word
    return x.default


def _values(cls: type, parsed: dict, ctx=None) -> dict:
    """The parsed parameters as flat option values: old flags folded in, lists and other stages' options
    converted; a name not in `parsed`, or a list not given, is left out (the config's default applies)."""
    run_file = (ctx.meta.get("dno.run_file") if ctx is not None else None) or {}
    out = {}
    for x in flat_fields(cls):
        value = parsed.get(x.name, NOT_GIVEN)
        old = parsed.get(ALIAS + x.name)
        if old not in (None, False) and (value is NOT_GIVEN or value == _cli_default(x)):
            value = old  # an old flag's value, unless the flag itself was given too
        if x.option.stage_options:
            table = dict((run_file.get("tables") or {}).get(x.option.stage_options) or {})
            given = parse_stage_args(x.option.stage_options, value, x.flag) if value not in (NOT_GIVEN, None) else None
            if given is None and not table:
                continue
            value = {**table, **(given or {})}
        elif value is NOT_GIVEN or value is None and x.default is not None:
            continue  # not given: the config's default (a list, a tuple or a value the command line has no word for)
        out[x.name] = value
    return out


def build_command(name: str, cls: type, run: Callable) -> Any:
    """The click command `dno NAME`: every option of `cls`, checked into a config, then `run(config)`."""
    from typer.main import get_command_from_info
    from typer.models import CommandInfo

    def command(**parsed):
        ctx = parsed.pop(CTX)
        cfg = from_options(cls, _values(cls, parsed, ctx))
        path = ctx.meta.get("dno.run_file_path")
        if path is None:
            return run(cfg)
        from dno_data.lineage import run_file_recorded

        with run_file_recorded(path):  # the lineage names the file and its content hash
            return run(cfg)

    command.__signature__ = _signature(cls)
    command.__doc__ = cls.__doc__
    info = CommandInfo(name=name.split()[-1], callback=one_line_errors(command), help=_escape(cls.__doc__ or ""))
    return get_command_from_info(info, pretty_exceptions_short=True, rich_markup_mode="rich")


# ---------------------------------------------------------------- another stage's options: "--beta 0.1" -> {"beta": 0.1}

@functools.cache
def _options_parser(stage: str):
    from typer.main import get_command_from_info
    from typer.models import CommandInfo

    from dno_data.stages import load

    cls, _ = load(stage)

    def given(**parsed):
        ctx = parsed.pop(CTX)
        source = ctx.get_parameter_source
        return _values(cls, {k: v for k, v in parsed.items() if getattr(source(k), "name", "") == "COMMANDLINE"})

    given.__signature__ = _signature(cls, all_optional=True)
    info = CommandInfo(name=stage, callback=given)
    return get_command_from_info(info, pretty_exceptions_short=True, rich_markup_mode=None)


def parse_stage_args(stage: str, text: str | list | tuple, flag: str) -> dict:
    """`--train-args "--beta 0.1"`: the options of `dno train` in that string, as {name: value}; a typo or a bad
    value is one DnoError naming `flag`."""
    import shlex

    if isinstance(text, (list, tuple)):
        args = [str(a) for a in text]
    else:
        try:
            args = shlex.split(text or "")
        except ValueError as e:
            raise DnoError(f"{flag} {text!r}: {e}") from None
    try:
        result = _options_parser(stage).main(args=args, prog_name=f"dno {stage}", standalone_mode=False)
    except typer.Exit:
        raise DnoError(f"{flag}: pass dno {stage}'s options (see `dno {stage} --help`)") from None
    except Exception as e:  # click's usage errors: no such option, a bad value
        msg = e.format_message() if hasattr(e, "format_message") else str(e)
        raise DnoError(f"{flag} {text!r}: {msg} (dno {stage}'s options: `dno {stage} --help`)") from None
    return result


# ---------------------------------------------------------------- --config run.toml

def _command_path(ctx) -> list[str]:
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return names[::-1]


def _load_config(ctx, param, value):
    """Eager --config: the file's table for this command becomes its defaults (click's default_map), so flags
    on the command line override them and the values go through the flags' own conversions."""
    if value is None:
        return value
    names = _command_path(ctx)
    try:
        run_file = read_run_file(Path(value), " ".join(names))
    except DnoError as e:
        _fail(str(e))
    by_name = {p.name: p for p in ctx.command.params}
    values = dict(run_file["values"])
    for key, v in list(values.items()):
        p = by_name[key]
        if isinstance(v, list) and not (p.multiple or p.nargs != 1):  # e.g. sample_args = ["-k", "4"]
            import shlex

            values[key] = v = shlex.join(map(str, v))
        try:
            p.get_runtime_param().coerce(v, param=p, ctx=ctx) if hasattr(p, "get_runtime_param") else p.type_cast_value(ctx, v)
        except Exception as e:  # click's BadParameter: the flag's own conversion
            _fail(f"{value}: {'.'.join(names)} {key.replace('_', '-')} = {v!r}: {getattr(e, 'message', None) or e}")
    ctx.default_map = {**(ctx.default_map or {}), **values}
    ctx.meta["dno.run_file"] = run_file
    ctx.meta["dno.run_file_path"] = Path(value)
    return value
