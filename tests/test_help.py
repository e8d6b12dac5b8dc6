"""Every `dno` sub-command has help, and the README documents each one."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from conftest import ROOT
from dno_data.stages import STAGES, load
from stages.cli import app

COMMANDS = list(STAGES)  # "model import-gguf" is a sub-command of `dno model`


def _help_text(name: str) -> str:
    return STAGES[name].help


def test_expected_commands_are_registered():
    assert {"prompts", "sample", "judge", "pairs", "train", "eval", "sql"} <= set(COMMANDS)
    assert len(COMMANDS) == len(set(COMMANDS))


@pytest.mark.parametrize("name", COMMANDS)
def test_the_registry_line_is_the_config_s_help(name):
    """The one line `dno --help` lists is the config's own docstring: declared once in spirit, checked here."""
    cls = load(name)[0]
    assert STAGES[name].help == " ".join((cls.__doc__ or "").split()), name


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help(name):
    doc = _help_text(name).strip()
    assert doc, f"dno {name} has no help text"
    result = CliRunner().invoke(app, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    first_words = " ".join(doc.split()[:3])
    assert first_words in " ".join(result.output.split())


def test_top_level_help_lists_every_command():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert re.search(rf"\b{re.escape(name.split()[0])}\b", result.output), name


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


# ---------------------------------------------------------------- docs that map to the code

def _layout_block() -> str:
    """The annotated file tree: the first code block of docs/layout.md."""
    text = (ROOT / "docs" / "layout.md").read_text()
    return text.split("```", 2)[1]


def _layout_sections() -> dict[str, list[str]]:
    """Top-level folder -> the file names listed under it (the name column, before the description)."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in _layout_block().splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            current = line.split()[0].rstrip("/")
            continue
        names_column = re.split(r"\s{2,}", line.strip())[0]
        sections.setdefault(current, []).extend(re.findall(r"[\w.-]+\.(?:py|json)\b|\b[a-z_]+/", names_column))
    return sections


def test_readme_layout_lists_every_file_once():
    sections = _layout_sections()
    for folder in ("dno_data", "stages", "schemas"):
        listed = sections.get(folder, [])
        files = [p.name for p in (ROOT / folder).iterdir()
                 if (p.suffix in (".py", ".json") and p.name != "__init__.py") or (p.is_dir() and p.name != "__pycache__")]
        for f in files:
            name = f if "." in f else f + "/"
            assert listed.count(name) == 1, f"docs/layout.md lists {folder}/{name} {listed.count(name)} times"


def test_conftest_maps_every_library_module_to_existing_tests():
    import conftest

    doc = conftest.__doc__
    for p in sorted((ROOT / "dno_data").rglob("*.py")):
        name = p.relative_to(ROOT).as_posix()
        if p.name != "__init__.py" or p.parent != ROOT / "dno_data":
            assert name in doc, f"tests/conftest.py's map lacks {name}"
    for test_file in set(re.findall(r"test_\w+\.py", doc)):
        assert (ROOT / "tests" / test_file).exists(), test_file


def test_error_hints_name_only_declared_extras():
    import tomllib

    from dno_data.errors import missing_extra

    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    files = ([p for d in ("dno_data", "stages") for p in (ROOT / d).rglob("*.py")] + [ROOT / "README.md"]
             + sorted((ROOT / "docs").glob("*.md")))
    for path in files:
        text = path.read_text()
        for extra in re.findall(r"dno-data\[(\w+)\]", text):
            if "{" not in extra:
                assert extra in extras, f"{path.name} names the extra dno-data[{extra}], which does not exist"
        for package, extra in re.findall(r"missing_extra\(\"(\w+)\", \"(\w+)\"\)", text):
            assert extra in extras or str(missing_extra(package, extra)).endswith(f"pip install {package}"), path
    assert str(missing_extra("openai", "openai")) == "openai is not installed; install it with: pip install openai"
    assert "dno-data[vllm]" in str(missing_extra("vllm", "vllm"))


def test_square_brackets_in_help_texts_are_shown_as_written():
    """Rich reads `[train]` as markup and drops it ("e.g.  beta = 0.1"): every text a command's help is built
    from (the command's docstring, an option's help, its panel's title) is shown literally."""
    from dataclasses import dataclass

    from dno_data.config import Config, opt
    from stages.build import build_command

    @dataclass(frozen=True, kw_only=True)
    class Bracketed(Config):
        """Read a [sample] table."""

        beta: float = opt("Set it in a run file, e.g. [train] beta = 0.1.", 0.1)
        k: int = opt("Per stage (or in [iterate]), a table per stage.", 4, panel="Stage tables ([train], [eval])")

    command = build_command("bracketed", Bracketed, lambda cfg: None)
    from click.testing import CliRunner as ClickRunner

    result = ClickRunner().invoke(command, ["--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    for shown in ("Read a [sample] table.", "e.g. [train] beta = 0.1.", "(or in [iterate]), a table per stage.",
                  "Stage tables ([train], [eval])"):
        assert shown in text, shown
    assert "\\[" not in text
