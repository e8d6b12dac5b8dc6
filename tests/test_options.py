"""dno_data/config: every option declared once, on its config field or in a shared group; the groups are the same
objects in every command that uses them; API settings passed through by every command that takes an `openai:`
spec; eval's teacher and judge on the server given by --base-url."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import FAKE_SERVER_SAFETY
from dno_data.artifacts import read_artifact
from dno_data.config import GROUP, OPTION, flat_fields
from dno_data.config.groups import Api, JudgeSettings, ModelLoading, Sampling, judge_specs
from dno_data.lineage import read_lineage
from dno_data.stages import STAGES, load
from dno_data.stages import eval as eval_stage
from dno_data.stages import judge as judge_stage
from dno_data.stages import sample as sample_stage
from dno_data.training.options import TrainOptions
from support.fake_openai import FakeOpenAIServer
from stages.cli import app

OPENAI_COMMANDS = {"sample": sample_stage.SampleConfig, "judge": judge_stage.JudgeConfig, "eval": eval_stage.EvalConfig}
GROUP_USERS = {Api: ["sample", "judge", "eval"], ModelLoading: ["sample", "eval"], Sampling: ["sample", "eval"],
               JudgeSettings: ["judge", "eval"], TrainOptions: ["train", "sft"]}


def _all_configs():
    return [load(name)[0] for name in STAGES]


def _groups(cls) -> dict:
    return {f.metadata[GROUP].cls: f for f in dataclasses.fields(cls) if GROUP in f.metadata}


@pytest.mark.parametrize("group", list(GROUP_USERS), ids=lambda g: g.__name__)
def test_shared_groups_are_one_declaration(group):
    """A shared group is embedded, not declared again: the same class, so the same options, in every user."""
    for command in GROUP_USERS[group]:
        cls = load(command)[0]
        assert group in _groups(cls), f"dno {command} does not embed {group.__name__}"
        declared = {f.name: f.metadata[OPTION] for f in dataclasses.fields(group)}
        own_help = _groups(cls)[group].metadata[GROUP].help or {}
        for x in flat_fields(cls):
            if len(x.path) == 2 and _groups(cls)[group].name == x.path[0]:
                if x.path[1] in own_help:  # this command's own help text of the option, the rest shared
                    assert x.option == dataclasses.replace(declared[x.path[1]], help=own_help[x.path[1]])
                else:
                    assert x.option is declared[x.path[1]]  # the group's own declaration, not a copy


def test_train_and_sft_each_say_what_batch_size_counts():
    """One declaration of --batch-size, its help each command's own: pairs for dno train, examples for dno sft."""
    from dno_data.stages.sft import SftConfig
    from dno_data.stages.train import TrainConfig

    train = {x.name: x.option.help for x in flat_fields(TrainConfig)}
    sft = {x.name: x.option.help for x in flat_fields(SftConfig)}
    assert train["batch_size"] == "Pairs per micro-batch per process."
    assert sft["batch_size"] == "Examples per micro-batch per process."
    for name in ("batch_size", "epochs", "max_steps"):
        assert "dno sft" not in train[name] and "dno train" not in sft[name], name


def test_every_openai_command_accepts_the_same_api_options():
    for name, cls in OPENAI_COMMANDS.items():
        flat = {x.name for x in flat_fields(cls)}
        missing = {f.name for f in dataclasses.fields(Api)} - flat
        assert not missing, f"dno {name} lacks {sorted(missing)}"
        out = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"}).output
        for f in dataclasses.fields(Api):
            assert "--" + f.name.replace("_", "-") in out, (name, f.name)


def test_operational_settings_are_declared_on_the_option():
    for cls in OPENAI_COMMANDS.values():
        flat = {x.name: x for x in flat_fields(cls)}
        for name in ("output", "force", "concurrency", "timeout", "max_retries", "cache", "base_url", "threads"):
            if name in flat:
                assert flat[name].option.changes_output is False, (cls.__name__, name)
        for name in ("temperature", "top_p", "max_new_tokens", "judge", "seed"):
            if name in flat:
                assert flat[name].option.changes_output is True, (cls.__name__, name)


def test_every_field_of_every_command_is_declared():
    for cls in _all_configs():
        for f in dataclasses.fields(cls):
            assert OPTION in f.metadata or GROUP in f.metadata, f"{cls.__name__}.{f.name} has no option declaration"


def test_a_config_is_checked_when_it_is_built():
    """The Python API refuses a bad value on construction, naming the field; from the command line's names, the flag."""
    from dno_data.config import OptionError
    from dno_data.stages.train import TrainConfig

    with pytest.raises(OptionError, match=r"TrainOptions.beta = 'high': expected a number"):
        TrainOptions(beta="high")
    with pytest.raises(OptionError, match=r"--beta -1: must be greater than 0"):
        TrainConfig.from_options(pairs="p.parquet", model="m", output="o", beta=-1)
    with pytest.raises(OptionError, match=r"--judge-temperature -1: must be at least 0"):
        eval_stage.EvalConfig.from_options(prompts="p", model="m", judge="oracle:exact", output="e.parquet",
                                           judge_temperature=-1)
    with pytest.raises(Exception, match=r"unknown option 'betta'"):
        TrainConfig.from_options(pairs="p.parquet", model="m", output="o", betta=0.2)
    with pytest.raises(Exception, match=r"--epochs 2: dno train takes at most one epoch"):
        TrainConfig.from_options(pairs="p.parquet", model="m", output="o", epochs=2)
    cfg = TrainConfig(pairs="p.parquet", model="m", output="o", training=TrainOptions(beta=0.2))
    assert cfg.pairs.name == "p.parquet" and cfg.training.beta == 0.2  # a str for a path is converted


def _alternatives(x, tmp_path):
    """Values other than the default for one option, to try."""
    import typing

    hint = x.hint
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    base = args[0]
    if typing.get_origin(base) is tuple:
        return [("a=1", "b=2"), (str(tmp_path / "x.parquet"),)]
    if base is bool:
        return [not x.default]
    if base is int:
        return [(x.default or 0) + 1, 7]
    if base is float:
        return [0.25, (x.default or 0) + 0.5, 3.0]
    if base is Path:
        return [tmp_path / "some file.parquet"]
    if base is dict:
        return []
    if x.option.none_word is not None:
        return [None, "python:m:f", "openai:gold", "eval"]
    return ["openai:gold", "rubric", "pairwise", "cosine", "bfloat16", "vllm", "1/2", "csv", "best-worst", "q_proj",
            "python:m:f", "teacher", "policy", "drop", "keep", "4GB", "dno,sft", "float16", "x"]


REQUIRED = {"judge": "oracle:exact", "model": "m"}


def _parse_with_cli(name, argv):
    from stages.build import CTX, _values
    from stages.cli import _command

    seen = []
    command = _command(name)
    original = command.callback
    try:
        command.callback = lambda **kw: seen.append(kw)
        command.main(args=argv, standalone_mode=False)
    finally:
        command.callback = original
    return _values(load(name)[0], {k: v for k, v in seen[0].items() if k != CTX})


@pytest.mark.parametrize("name", list(STAGES))
def test_argv_round_trip(name, tmp_path):
    """Every option, set to a value other than its default: the config's command line (what the loop prints and
    runs) parses back into the same config."""
    from dno_data.config import from_options, to_argv, to_options
    from dno_data.errors import DnoError

    cls = load(name)[0]
    required = {x.name: REQUIRED.get(x.name, tmp_path / f"{x.name}.parquet")
                for x in flat_fields(cls) if x.required}
    if "shards" in required:
        required["shards"] = (tmp_path / "a.parquet", tmp_path / "b.parquet")
    if "runs" in required:
        required["runs"] = (tmp_path / "r",)
    tried = 0
    for x in flat_fields(cls):
        if x.required or x.option.stage_options:
            continue
        for alt in _alternatives(x, tmp_path):
            try:
                cfg = from_options(cls, {**required, x.name: alt})
            except DnoError:
                continue
            if to_options(cfg)[x.name] == x.default:
                continue
            assert to_options(from_options(cls, _parse_with_cli(name, to_argv(cfg)))) == to_options(cfg), (x.name, alt)
            tried += 1
            break
    assert tried >= 1


def test_loop_steps_round_trip(tmp_path):
    """The loop's steps with per-stage options (as `--sample-args` etc. give them) parse back the same."""
    from dno_data.config import from_options, to_argv, to_options
    from dno_data.loop import LoopSettings, eval_config, iteration_configs, sft_config
    from dno_data.stages import stage_name

    s = LoopSettings(run=tmp_path / "r", model=tmp_path / "m", judge="oracle:addition",
                     options={"sample": {"k": 3, "temperature": 0.5, "engine_args": ("a=1", "b=2")},
                              "judge": {"both_orders": False, "template": tmp_path / "t.jinja"},
                              "train": {"beta": 0.25, "group_by_length": True, "max_grad_norm": 0.0},
                              "eval": {"teacher_max_new_tokens": 7, "judge_template": tmp_path / "t.jinja"},
                              "sft": {"learning_rate": 0.01}})
    steps = [*iteration_configs(s, 1, max_pairs=10), eval_config(s, 0),
             sft_config(s, 2, tmp_path / "s.parquet", judgments=tmp_path / "j.parquet", max_steps=5)]
    for cfg in steps:
        name = stage_name(cfg)
        assert to_options(from_options(type(cfg), _parse_with_cli(name, to_argv(cfg)))) == to_options(cfg), name


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
        out = eval_stage.run(eval_stage.EvalConfig.from_options(
            prompts=prompts, model=tiny_model, judge="openai:m", teacher="openai:gold", output=tmp_path / "e.parquet",
            max_new_tokens=2, batch_size=2, threads=1, base_url=srv.base_url, cache=tmp_path / "c.sqlite",
            judge_template=template, timeout=10, max_retries=1))
        bodies = srv.stats.bodies
    rows = read_artifact(out, "eval").to_pylist()
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    assert all(r["teacher_response"].startswith("ok: ") for r in rows)  # the fake server's answer
    models = [b["model"] for b in bodies]
    assert models.count("gold") == 4 and models.count("m") == 4  # teacher and judge calls both reached --base-url
    judge_prompts = [b["messages"][-1]["content"] for b in bodies if b["model"] == "m"]
    assert all(p.startswith("Rate these answers to:") for p in judge_prompts)  # --template was used
    lineage = read_lineage(out)
    assert lineage["config"]["judge_template"] == str(template) and "timeout" in lineage["operational"]


def test_eval_cli_takes_template_timeout_and_retries():
    out = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--judge-template", "--timeout", "--max-retries", "--judge-system-prompt", "--teacher-max-new-tokens",
                 "--judge-temperature", "--judge-mode"):
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

def _visible_flags() -> dict[str, set[str]]:
    """Every command's flags as --help shows them (hidden aliases left out)."""
    from stages.cli import _command

    out = {}
    for name in STAGES:
        cmd = _command(name)
        out[name] = {f for p in cmd.params if not getattr(p, "hidden", False) for f in [*p.opts, *p.secondary_opts]
                     if f.startswith("--")}
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
    """An option declared once has one default, except where a command's group says otherwise on purpose."""
    defaults: dict[int, set] = {}
    names: dict[int, str] = {}
    for cls in _all_configs():
        for x in flat_fields(cls):
            if x.default is not dataclasses.MISSING:
                defaults.setdefault(id(x.option), set()).add(repr(x.default))
                names[id(x.option)] = x.name
    # sampling differs on purpose: `dno sample` 0.7 / 0.95 (the paper), `dno eval` greedy, the demo at 1.0
    by_design = {"temperature", "top_p", "teacher"}
    assert {names[k]: v for k, v in defaults.items() if len(v) > 1 and names[k] not in by_design} == {}
    assert {x.default for x in flat_fields(judge_stage.JudgeConfig) if x.name == "timeout"} == {120.0}


def test_old_flags_are_hidden_aliases():
    from stages.cli import _command

    seen = []
    command = _command("judge")
    original = command.callback
    command.callback = lambda **kw: seen.append({k: v for k, v in kw.items() if k in ("max_new_tokens", "force")
                                                 or k.startswith("alias__")})
    try:
        for args in (["--max-tokens", "7", "--fresh"], ["--overwrite"], ["--max-new-tokens", "3", "--max-tokens", "7"]):
            command.main(args=["s.parquet", "-o", "j.parquet", "--judge", "oracle:exact", *args], standalone_mode=False)
    finally:
        command.callback = original
    from stages.build import _values

    values = [_values(judge_stage.JudgeConfig, kw) for kw in seen]
    assert [(v.get("max_new_tokens"), v.get("force")) for v in values] == [(7, True), (None, True), (3, False)]
    shown = " ".join(CliRunner().invoke(app, ["judge", "--help"], env={"COLUMNS": "200"}).output.split())
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
