"""The `dno` command: one sub-command per stage of dno_data.stages, made from its config (stages/build.py).

Run as `dno ...` or `python -m stages.cli ...`. A sub-command's module is imported only when that
command runs (or its help is shown), so `dno --help` loads no stage, and no command loads torch
before it needs it.
"""

from __future__ import annotations

from contextlib import contextmanager

import typer
from typer.core import TyperGroup

from dno_data import __version__
from dno_data.stages import GROUPS, STAGES

HELP = ("Direct Nash Optimization as offline stages over versioned Parquet: "
        "prompts -> sample -> judge -> pairs -> train (-> eval); `dno iterate` chains them.")


class Commands(TyperGroup):
    """A group whose commands are made on first use from the registry (dno_data.stages.STAGES)."""

    prefix = ""  # "model " for the sub-commands of `dno model`

    def list_commands(self, ctx):
        return list(dict.fromkeys(n[len(self.prefix):].split()[0] for n in STAGES if n.startswith(self.prefix)))

    def get_command(self, ctx, name):
        full = self.prefix + name
        if full in STAGES:  # the help's list needs a name and a line; a command that runs, its module
            return _command(full) if getattr(ctx, "dno_resolving", False) else _listed(full)
        if not self.prefix and name in GROUPS:
            return _group(name)
        return None

    def make_context(self, info_name, args, parent=None, **extra):
        with usage_errors_as_one_line(self.prefix.strip() or None):
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        with usage_errors_as_one_line(self.prefix.strip() or None):
            return super().invoke(ctx)

    def resolve_command(self, ctx, args):
        ctx.dno_resolving = True
        try:
            return super().resolve_command(ctx, args)
        finally:
            ctx.dno_resolving = False


@contextmanager
def usage_errors_as_one_line(group: str | None):
    """click's usage errors (an unknown option, `--partitions 1.5`, a missing argument) as one `error:` line
    naming the command and where its help is, exit 1, instead of a box of usage text."""
    try:  # typer's own click (typer 0.29 vendors it; the click package may be another one)
        from typer._click.exceptions import UsageError
    except ImportError:
        from click.exceptions import UsageError

    try:
        yield
    except UsageError as e:
        from .build import echo_error

        ctx = e.ctx
        path = ctx.command_path if ctx is not None else ("dno " + group if group else "dno")
        echo_error(f"{path}: {e.format_message()} (see `{path} --help`)")
        raise typer.Exit(1) from None


_MADE: dict = {}


def _command(name: str):
    if name not in _MADE:
        from dno_data.stages import load

        from .build import build_command

        cls, run = load(name)
        _MADE[name] = build_command(name, cls, run)
        _MADE[name].short_help = STAGES[name].help
    return _MADE[name]


def _listed(name: str):
    from typer.core import TyperCommand

    return TyperCommand(name.split()[-1], short_help=STAGES[name].help, help=STAGES[name].help)


def _group(name: str):
    if name not in _MADE:
        sub = type(f"{name.title()}Commands", (Commands,), {"prefix": name + " "})
        _MADE[name] = sub(name=name, help=GROUPS[name], no_args_is_help=True)
    return _MADE[name]


app = typer.Typer(name="dno", help=HELP, cls=Commands, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                  pretty_exceptions_enable=False)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"dno {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print dno's version and exit.")) -> None:
    pass


def main() -> None:
    app(prog_name="dno")


if __name__ == "__main__":
    main()
