"""The OpenAI-compatible call runner (dno_data.openai_api.runner): server settings and failures."""

from __future__ import annotations

import pytest

from conftest import standard_groups, write_judge_samples
from dno_data.errors import DnoError
from dno_data.openai_api.runner import ApiSettings, describe_failure

CREDENTIALS = "http://alice:s3cret@127.0.0.1:9/v1"


def test_credentials_in_the_base_url_are_refused():
    with pytest.raises(DnoError, match="--base-url: .*user:password") as e:
        ApiSettings(base_url=CREDENTIALS)
    assert "s3cret" not in str(e.value) and "alice" not in str(e.value)
    ApiSettings(base_url="http://127.0.0.1:9/v1")  # without them: fine


def test_credentials_in_openai_base_url_are_refused(monkeypatch):
    from dno_data.openai_api.runner import check_api

    monkeypatch.setenv("OPENAI_BASE_URL", CREDENTIALS)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with pytest.raises(DnoError, match="OPENAI_BASE_URL") as e:
        check_api(ApiSettings())
    assert "s3cret" not in str(e.value)


def test_judge_with_credentials_in_the_url_stops_before_any_work(tmp_path):
    from dno_data.stages.judge import JudgeConfig, run

    samples = write_judge_samples(tmp_path / "samples.parquet", standard_groups(1))
    out = tmp_path / "j.parquet"
    with pytest.raises(DnoError) as e:
        run(JudgeConfig.from_options(samples=samples, output=out, judge="openai:m", base_url=CREDENTIALS, cache=tmp_path / "c.sqlite"))
    assert "s3cret" not in str(e.value)
    assert not out.exists() and not (tmp_path / "j.parquet.parts").exists()


def test_failures_never_show_credentials():
    err = RuntimeError(f"cannot connect to {CREDENTIALS}/chat/completions")
    text = describe_failure(err)
    assert "s3cret" not in text and "alice" not in text and "127.0.0.1:9/v1/chat/completions" in text


def test_sample_and_eval_with_credentials_in_a_url_stop_before_any_work(tmp_path, tiny_model):
    from conftest import problem_rows, write_jsonl
    from dno_data.stages.eval import EvalConfig
    from dno_data.stages.prompts import PromptsConfig, run as prompts_run
    from dno_data.stages.sample import SampleConfig

    src = write_jsonl(tmp_path / "p.jsonl", problem_rows(2))
    prompts = prompts_run(PromptsConfig.from_options(src=src, output=tmp_path / "prompts.parquet", reference_column="reference",
                                        eval_size=1))
    for cls, kw in [(SampleConfig, dict(output=tmp_path / "a.parquet", model="m", backend="openai",
                                        base_url=CREDENTIALS, tokenizer=tiny_model)),
                    (SampleConfig, dict(output=tmp_path / "b.parquet", teacher="openai:m", teacher_base_url=CREDENTIALS)),
                    (EvalConfig, dict(model=tiny_model, judge="openai:m", output=tmp_path / "c.parquet",
                                      base_url=CREDENTIALS, split=None))]:
        with pytest.raises(DnoError, match="credentials") as e:  # refused when the config is built
            cls.from_options(prompts=prompts, **kw)
        assert "s3cret" not in str(e.value) and "alice" not in str(e.value)
        assert not kw["output"].exists() and not kw["output"].with_name(kw["output"].name + ".parts").exists()
