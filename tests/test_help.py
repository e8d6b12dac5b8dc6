"""Every `dno` sub-command has help, and the README documents each one."""

from __future__ import annotations

import inspect
import re

import pytest
from typer.testing import CliRunner

from conftest import ROOT
from stages.cli import app

COMMANDS = [c.name or c.callback.__name__ for c in app.registered_commands]


def _help_text(name: str) -> str:
    cmd = next(c for c in app.registered_commands if (c.name or c.callback.__name__) == name)
    return cmd.help or inspect.getdoc(cmd.callback) or ""


def test_expected_commands_are_registered():
    assert {"prompts", "sample", "judge", "pairs", "train", "eval", "sql"} <= set(COMMANDS)
    assert len(COMMANDS) == len(set(COMMANDS))


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help(name):
    doc = _help_text(name).strip()
    assert doc, f"dno {name} has no help text"
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    first_words = " ".join(doc.split()[:3])
    assert first_words in " ".join(result.output.split())


def test_top_level_help_lists_every_command():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert re.search(rf"\b{re.escape(name)}\b", result.output), name


def test_cli_help_in_a_subprocess(cli, tmp_path):
    proc = cli("--help")
    assert proc.returncode == 0
    assert "prompts" in proc.stdout and "train" in proc.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_readme_mentions_every_command(name):
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md does not exist yet")
    assert re.search(rf"\bdno {re.escape(name)}\b", readme.read_text()), f"README.md never shows `dno {name}`"


SOURCES = sorted(p for d in ("dno_data", "stages", "schemas") for p in (ROOT / d).glob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=[p.relative_to(ROOT).as_posix() for p in SOURCES])
def test_sources_compile_without_warnings(path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compile(path.read_text(), str(path), "exec")
