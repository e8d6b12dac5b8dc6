"""The template check: the rendered prompt's tokens must be an exact prefix of prompt + response.

A BPE tokenizer whose chat template ends the generation prompt with a space breaks it (the space
merges with the response's first word); the char-level tiny model never does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import FAKE_SERVER_SAFETY
from dno_data.errors import DnoError
from dno_data.models import check_template_prefix, render_prompt

TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant: {% endif %}")  # the trailing space is the bug


def _bpe_tokenizer(template: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["user: 12+34\nassistant: Hello 46", "assistant: Hello world", "Hello there 12 34 46 +"] * 50
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>", chat_template=template)


@pytest.fixture(scope="module")
def bad_model(tmp_path_factory) -> Path:
    """A tiny random Llama whose tokenizer's template ends in a space that BPE merges with the response."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _bpe_tokenizer(TEMPLATE)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    out = tmp_path_factory.mktemp("bad-template-model")
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


MSGS = [{"role": "user", "content": "12+34"}]


def test_check_fails_where_bpe_merges_across_the_boundary():
    tok = _bpe_tokenizer(TEMPLATE)
    prompt = render_prompt(tok, MSGS)
    assert prompt.endswith("assistant: ")
    with pytest.raises(DnoError, match="prompt p-7: the rendered prompt's tokens are not a prefix") as e:
        check_template_prefix(tok, prompt, ["Hello"], "p-7", "models/x")
    assert "models/x" in str(e.value) and "\n" not in str(e.value)
    # The same tokenizer with the space moved into the response passes.
    good = _bpe_tokenizer(TEMPLATE.replace("assistant: ", "assistant:"))
    check_template_prefix(good, render_prompt(good, MSGS), [" Hello", " 46", ""], "p-7", "models/x")


def test_check_passes_for_the_char_model(tiny_tokenizer):
    prompt = render_prompt(tiny_tokenizer, MSGS)
    check_template_prefix(tiny_tokenizer, prompt, ["46", "", " 4 6", "=+"], "p1", "tiny")


@pytest.fixture
def prompts4(tmp_path):
    from conftest import problem_rows, write_jsonl
    from stages.prompts import PromptsConfig, run

    src = write_jsonl(tmp_path / "p.jsonl", problem_rows(4))
    return run(PromptsConfig(src=src, output=tmp_path / "prompts.parquet", reference_column="reference"))


def test_hf_sampling_fails_fast_naming_the_prompt(tmp_path, prompts4, bad_model, monkeypatch):
    import dno_data.generation.hf as generation
    from dno_data.artifacts import read_artifact
    from stages.sample import SampleConfig, run

    calls = []
    real = generation.HFGenerator.generate
    monkeypatch.setattr(generation.HFGenerator, "generate", lambda *a, **kw: (calls.append(1), real(*a, **kw))[1])
    first = read_artifact(prompts4, "prompts")["prompt_id"][0].as_py()
    with pytest.raises(DnoError, match=f"prompt {first}: the rendered prompt's tokens are not a prefix"):
        run(SampleConfig(prompts=prompts4, output=tmp_path / "s.parquet", model=bad_model, k=2, max_new_tokens=4,
                         threads=1))
    assert calls == []  # before any generation
    assert not (tmp_path / "s.parquet").exists()


def test_check_covers_generated_and_teacher_responses(tmp_path, prompts4, tiny_model, monkeypatch):
    """A response that breaks the property is caught after generation, before its part is written."""
    import dno_data.sampling as sampling
    from stages.sample import SampleConfig, run

    seen = []

    def strict(tok, text, responses, pid, where):
        if responses != ["Hello"]:  # not the probe: the rows of a generated batch
            seen.append(responses)
            raise DnoError(f"prompt {pid}: not a prefix")

    monkeypatch.setattr(sampling, "check_template_prefix", strict)
    with pytest.raises(DnoError, match="prompt .*: not a prefix"):
        run(SampleConfig(prompts=prompts4, output=tmp_path / "s.parquet", model=tiny_model, k=2, max_new_tokens=2,
                         threads=1, teacher="reference", batch_size=1))
    (responses,) = seen
    assert len(responses) == 3 and responses[-1] in {"46", "76", "47", "99"}  # 2 samples + the teacher's answer
    assert not list((tmp_path / "s.parquet.parts").glob("part-*"))


def test_openai_backend_runs_the_check_with_its_tokenizer(tmp_path, prompts4, bad_model):
    from support.fake_openai import FakeOpenAIServer
    from stages.sample import SampleConfig, run

    with FakeOpenAIServer(**FAKE_SERVER_SAFETY) as srv:
        with pytest.raises(DnoError, match="not a prefix"):
            run(SampleConfig(prompts=prompts4, output=tmp_path / "s.parquet", model="fake", backend="openai",
                             base_url=srv.base_url, tokenizer=bad_model, k=2, max_new_tokens=8))
        assert srv.stats.chat_requests == 0
