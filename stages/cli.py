"""The `dno` command: one sub-command per stage module (each a thin wrapper of its run(cfg)).

Run as `dno ...` or `python -m stages.cli ...` (the form `accelerate launch -m` needs).
"""

from __future__ import annotations

from typing import Annotated

import typer

from dno_data import __version__

from . import compare, demo, export, iterate, judge, merge, model, pairs, prompts, report, sample, sft, sql, train
from . import eval as eval_

app = typer.Typer(
    name="dno",
    help="Direct Nash Optimization as offline stages over versioned Parquet: "
    "prompts -> sample -> judge -> pairs -> train (-> eval); `dno iterate` chains them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"dno {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="Print dno's version and exit.")] = False) -> None:
    pass


app.command("prompts")(prompts.command)
app.command("sample")(sample.command)
app.command("merge")(merge.command)
app.command("judge")(judge.command)
app.command("pairs")(pairs.command)
app.command("train")(train.command)
app.command("sft")(sft.command)
app.command("eval")(eval_.command)
app.command("iterate")(iterate.command)
app.command("compare")(compare.command)
app.command("export")(export.command)
app.command("sql")(sql.command)
app.command("report")(report.command)
app.command("demo")(demo.command)
app.add_typer(model.app, name="model")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
