"""One module per `dno` command: a config dataclass, run(cfg) -> Path, a thin Typer command.

Pipeline stages talk only through files; none imports another.
"""
