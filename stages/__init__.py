"""The `dno` command line, made from the library's stages (dno_data.stages): cli.py is the command,
build.py turns a stage's config into its Typer command. Nothing here does a stage's work.
"""
