"""stages/options.py: every option declared once, on its Config field; shared groups reused;
API settings passed through by every command that takes an `openai:` spec; eval's teacher
and judge on the server given by --base-url."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from conftest import FAKE_SERVER_SAFETY
from dno_data.artifacts import read_artifact
from dno_data.lineage import read_lineage
from support.fake_openai import FakeOpenAIServer
from stages import eval as eval_stage
from stages import judge as judge_stage
from stages import sample as sample_stage
from stages.cli import app
from stages.options import API_OPTIONS, MODEL_OPTIONS, OPTION, SAMPLING_OPTIONS, changes_output, judge_specs

OPENAI_COMMANDS = {"sample": sample_stage.SampleConfig, "judge": judge_stage.JudgeConfig, "eval": eval_stage.EvalConfig}


def _fields(cls) -> dict:
    return {f.name: f for f in dataclasses.fields(cls)}


GROUP_USERS = {"api": (API_OPTIONS, ["sample", "judge", "eval"]), "model": (MODEL_OPTIONS, ["sample", "eval"]),
               "sampling": (SAMPLING_OPTIONS, ["sample", "eval"])}


@pytest.mark.parametrize("group", sorted(GROUP_USERS))
def test_shared_groups_are_one_declaration(group):
    options, users = GROUP_USERS[group]
    for command in users:
        fields = _fields(OPENAI_COMMANDS[command])
        for name, declaration in options.items():
            assert fields[name].metadata[OPTION] is declaration, f"dno {command}: {name} is declared again"


def test_every_openai_command_accepts_the_same_api_options():
    for name, cls in OPENAI_COMMANDS.items():
        missing = set(API_OPTIONS) - set(_fields(cls))
        assert not missing, f"dno {name} lacks {sorted(missing)}"
        out = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"}).output
        for opt in API_OPTIONS:
            assert "--" + opt.replace("_", "-") in out, (name, opt)


def test_operational_settings_are_declared_on_the_option():
    for cls in OPENAI_COMMANDS.values():
        for name in ("output", "force", "concurrency", "timeout", "max_retries", "cache", "base_url", "threads"):
            if name in _fields(cls):
                assert changes_output(cls, name) is False, (cls.__name__, name)
        for name in ("temperature", "top_p", "max_new_tokens", "judge", "seed"):
            if name in _fields(cls):
                assert changes_output(cls, name) is True, (cls.__name__, name)


def test_every_field_of_every_command_is_declared():
    from stages import demo, merge, model, pairs, prompts, sql, train

    configs = [prompts.PromptsConfig, sample_stage.SampleConfig, merge.MergeConfig, judge_stage.JudgeConfig,
               pairs.PairsConfig, train.TrainConfig, eval_stage.EvalConfig, sql.SqlConfig, demo.DemoConfig,
               model.ImportGgufConfig]
    for cls in configs:
        for f in dataclasses.fields(cls):
            assert OPTION in f.metadata, f"{cls.__name__}.{f.name} has no option declaration"


# ---------------------------------------------------------------- API settings reach the call runner

class _Stop(Exception):
    pass


@pytest.fixture
def recorded_runners(monkeypatch):
    """Every CallRunner made: (settings, cache path); the first one stops the command."""
    import dno_data.openai_api.runner as api

    made = []

    def fake_init(self, settings, cache):
        made.append((settings, getattr(cache, "path", None)))
        raise _Stop()

    monkeypatch.setattr(api.CallRunner, "__init__", fake_init)
    monkeypatch.setenv("MY_KEY_VAR", "sk-test")
    return made


API_ARGS = ["--base-url", "http://127.0.0.1:9/v1", "--api-key-env", "MY_KEY_VAR", "--concurrency", "3",
            "--rpm", "70", "--tpm", "9000", "--timeout", "13", "--max-retries", "2"]


def _expect(settings, base_url="http://127.0.0.1:9/v1"):
    assert (settings.base_url, settings.api_key_env, settings.concurrency, settings.rpm, settings.tpm,
            settings.timeout, settings.max_retries) == (base_url, "MY_KEY_VAR", 3, 70, 9000, 13, 2)


def _invoke(args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert isinstance(result.exception, _Stop), (result.output, result.exception)


def test_judge_passes_the_api_options_through(tmp_path, recorded_runners):
    from conftest import standard_groups, write_judge_samples

    samples = write_judge_samples(tmp_path / "samples.parquet", standard_groups(1))
    _invoke(["judge", samples, "-o", tmp_path / "j.parquet", "--judge", "openai:m", "--cache",
             tmp_path / "c.sqlite", *API_ARGS])
    [(settings, cache)] = recorded_runners
    _expect(settings)
    assert cache == tmp_path / "c.sqlite"


def test_sample_passes_the_api_options_through(tmp_path, stage_prompts, tiny_model, recorded_runners):
    prompts = stage_prompts()
    # the openai teacher (its own server flag) ...
    _invoke(["sample", prompts, "-o", tmp_path / "s.parquet", "--teacher", "openai:gold", "--cache",
             tmp_path / "c.sqlite", *API_ARGS, "--teacher-base-url", "http://127.0.0.1:8/v1"])
    (settings, cache), = recorded_runners
    _expect(settings, base_url="http://127.0.0.1:8/v1")
    assert cache == tmp_path / "c.sqlite"
    # ... and the openai backend
    recorded_runners.clear()
    _invoke(["sample", prompts, "-o", tmp_path / "s2.parquet", "--backend", "openai", "--model", "fake",
             "--tokenizer", tiny_model, "-k", "1", *API_ARGS])
    (settings, _), = recorded_runners
    _expect(settings)


def test_eval_passes_the_api_options_through(tmp_path, stage_prompts, tiny_model, recorded_runners):
    prompts = stage_prompts()
    _invoke(["eval", prompts, "--model", tiny_model, "--judge", "oracle:addition", "--teacher", "openai:gold",
             "-o", tmp_path / "e.parquet", "--max-new-tokens", "2", "--cache", tmp_path / "c.sqlite", *API_ARGS])
    (settings, cache), = recorded_runners  # the teacher
    _expect(settings)
    assert cache == tmp_path / "c.sqlite"
    recorded_runners.clear()
    _invoke(["eval", prompts, "--model", tiny_model, "--judge", "openai:m", "--teacher", "reference",
             "-o", tmp_path / "e2.parquet", "--max-new-tokens", "2", "--cache", tmp_path / "c.sqlite", *API_ARGS])
    (settings, cache), = recorded_runners  # the judge
    _expect(settings)
    assert cache == tmp_path / "c.sqlite"


# ---------------------------------------------------------------- eval: teacher and judge on --base-url

def test_eval_openai_teacher_uses_base_url(tmp_path, stage_prompts, tiny_model, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    prompts = stage_prompts()
    template = tmp_path / "judge.jinja"
    template.write_text('Rate these answers to: {{ instruction }}\n'
                        '{% for c in candidates %}<response id="{{ c.id }}">\n{{ c.text }}\n</response>\n{% endfor %}')
    with FakeOpenAIServer(keep_bodies=100, **FAKE_SERVER_SAFETY) as srv:
        out = eval_stage.run(eval_stage.EvalConfig(
            prompts=prompts, model=tiny_model, judge="openai:m", teacher="openai:gold", output=tmp_path / "e.parquet",
            max_new_tokens=2, batch_size=2, threads=1, base_url=srv.base_url, cache=tmp_path / "c.sqlite",
            template=template, timeout=10, max_retries=1))
        bodies = srv.stats.bodies
    rows = read_artifact(out, "eval").to_pylist()
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    assert all(r["teacher_response"].startswith("ok: ") for r in rows)  # the fake server's answer
    models = [b["model"] for b in bodies]
    assert models.count("gold") == 4 and models.count("m") == 4  # teacher and judge calls both reached --base-url
    judge_prompts = [b["messages"][-1]["content"] for b in bodies if b["model"] == "m"]
    assert all(p.startswith("Rate these answers to:") for p in judge_prompts)  # --template was used
    lineage = read_lineage(out)
    assert lineage["config"]["template"] == str(template) and "timeout" in lineage["operational"]


def test_eval_cli_takes_template_timeout_and_retries():
    out = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--template", "--timeout", "--max-retries", "--system-prompt", "--teacher-max-new-tokens"):
        assert flag in out


# ---------------------------------------------------------------- help texts list every spec

def _help(*args) -> str:
    return " ".join(CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"}).output.split())


@pytest.mark.parametrize("command", ["judge", "eval"])
def test_help_lists_every_judge_spec(command):
    from dno_data.judges.oracles import ORACLES

    text = _help(command)
    for spec in ["openai:MODEL", "reward:PATH", "python:module:function", *(f"oracle:{k}" for k in ORACLES)]:
        assert spec in text, f"dno {command} --help omits {spec}"
    assert "oracle:constraints" in judge_specs()


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_help_lists_every_teacher_spec(command):
    text = _help(command)
    for spec in ("reference", "python:module:function", "openai:MODEL"):
        assert spec in text


# ---------------------------------------------------------------- one vocabulary

def _all_configs():
    from stages import demo, export, iterate, merge, model, pairs, prompts, report, sql, train

    return [prompts.PromptsConfig, sample_stage.SampleConfig, merge.MergeConfig, judge_stage.JudgeConfig,
            pairs.PairsConfig, train.TrainConfig, eval_stage.EvalConfig, sql.SqlConfig, demo.DemoConfig,
            model.ImportGgufConfig, export.ExportConfig, iterate.IterateConfig, report.ReportConfig]


def _visible_flags() -> dict[str, set[str]]:
    """Every command's flags as --help shows them (hidden aliases left out)."""
    import typer.main

    root = typer.main.get_command(app)
    out = {}

    def walk(cmd, path):
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())
        if not getattr(cmd, "commands", None):
            out[path] = {f for p in cmd.params if not getattr(p, "hidden", False) for f in getattr(p, "opts", [])
                         if f.startswith("--")}
    walk(root, "")
    return out


def test_the_longest_answer_is_max_new_tokens_everywhere():
    flags = _visible_flags()
    lengths = {f for fs in flags.values() for f in fs if "tokens" in f and "max" in f}
    assert lengths and all(f.endswith("max-new-tokens") for f in lengths), sorted(lengths)
    assert "--max-new-tokens" in flags["judge"] and "--teacher-max-new-tokens" in flags["sample"]


def test_one_way_to_redo():
    flags = _visible_flags()
    for command in ("prompts", "sample", "judge", "pairs", "train", "eval", "export", "model import-gguf"):
        assert "--force" in flags[command], command
    assert not {f for fs in flags.values() for f in fs} & {"--fresh", "--overwrite"}


def test_the_same_option_has_the_same_default_everywhere():
    import stages.options as options

    shared = {id(v): k for k, v in vars(options).items() if isinstance(v, options.Option)}
    defaults: dict[str, set] = {}
    for cls in _all_configs():
        for f in dataclasses.fields(cls):
            name = shared.get(id(f.metadata[OPTION]))
            if name is not None and f.default is not dataclasses.MISSING:
                defaults.setdefault(name, set()).add(f.default)
    assert defaults["TIMEOUT"] == {options.API_TIMEOUT}
    # sampling differs on purpose: `dno sample` 0.7 / 0.95 (the paper), `dno eval` greedy, the demo at 1.0
    by_design = {"TEMPERATURE", "TOP_P"}
    assert {k: v for k, v in defaults.items() if len(v) > 1 and k not in by_design} == {}


def test_old_flags_are_hidden_aliases():
    import typer

    from stages.options import FORCE, JUDGE_MAX_NEW_TOKENS, build_command

    @dataclasses.dataclass(frozen=True)
    class Demo:
        max_new_tokens: int | None = JUDGE_MAX_NEW_TOKENS.field(None)
        force: bool = FORCE.field(False)

    seen = []
    demo = typer.Typer()
    demo.command("x")(build_command(Demo, seen.append, "demo"))
    demo.command("y")(lambda: None)
    runner = CliRunner()
    assert runner.invoke(demo, ["x", "--max-tokens", "7", "--fresh"]).exit_code == 0
    assert runner.invoke(demo, ["x", "--overwrite"]).exit_code == 0
    assert runner.invoke(demo, ["x", "--max-new-tokens", "3", "--max-tokens", "7"]).exit_code == 0
    assert seen == [Demo(7, True), Demo(None, True), Demo(3, False)]
    shown = runner.invoke(demo, ["x", "--help"], env={"COLUMNS": "200"}).output
    assert "--max-new-tokens" in shown and "--force" in shown
    assert "--max-tokens" not in shown and "--fresh" not in shown and "--overwrite" not in shown


def test_version():
    from dno_data import __version__

    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"dno {__version__}"


def test_sql_table_has_whole_headers_and_no_dtype_row(tmp_path):
    from conftest import write_example

    write_example(tmp_path / "run" / "prompts.parquet", "prompts")
    header = "chosen_minus_rejected_characters_per_iteration"
    r = CliRunner().invoke(app, ["sql", "--run", str(tmp_path / "run"),
                                 f"SELECT 1 AS {header}, 'x' AS other_rather_long_column_name_too, 2.5 AS c"],
                           env={"COLUMNS": "60"})
    assert r.exit_code == 0, r.output
    assert header in r.output and "other_rather_long_column_name_too" in r.output
    assert not any(t in r.output.split() for t in ("i32", "i64", "str", "f64", "decimal[2,1]", "---"))
