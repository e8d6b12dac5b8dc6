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
    from dno_data.stages.prompts import PromptsConfig, run

    src = write_jsonl(tmp_path / "p.jsonl", problem_rows(4))
    return run(PromptsConfig.from_options(src=src, output=tmp_path / "prompts.parquet", reference_column="reference"))


def test_hf_sampling_fails_fast_naming_the_prompt(tmp_path, prompts4, bad_model, monkeypatch):
    import dno_data.generation.hf as generation
    from dno_data.artifacts import read_artifact
    from dno_data.stages.sample import SampleConfig, run

    calls = []
    real = generation.HFGenerator.generate
    monkeypatch.setattr(generation.HFGenerator, "generate", lambda *a, **kw: (calls.append(1), real(*a, **kw))[1])
    first = read_artifact(prompts4, "prompts")["prompt_id"][0].as_py()
    with pytest.raises(DnoError, match=f"prompt {first}: the rendered prompt's tokens are not a prefix"):
        run(SampleConfig.from_options(prompts=prompts4, output=tmp_path / "s.parquet", model=bad_model, k=2, max_new_tokens=4,
                         threads=1))
    assert calls == []  # before any generation
    assert not (tmp_path / "s.parquet").exists()


def test_check_covers_generated_and_teacher_responses(tmp_path, prompts4, tiny_model, monkeypatch):
    """Responses that break the property are caught after generation, before their part is written;
    when every response of a batch breaks it, the stage fails (the template, not a response, is wrong)."""
    import dno_data.sampling as sampling
    from dno_data.stages.sample import SampleConfig, run

    seen = []

    def strict(tok, text, responses, pid, where):
        if responses != ["Hello"]:  # not the probe: the rows of a generated batch
            seen.append(responses)
            raise DnoError(f"prompt {pid}: not a prefix")

    monkeypatch.setattr(sampling, "check_template_prefix", strict)
    with pytest.raises(DnoError, match="prompt .*: not a prefix"):
        run(SampleConfig.from_options(prompts=prompts4, output=tmp_path / "s.parquet", model=tiny_model, k=2, max_new_tokens=2,
                         threads=1, teacher="reference", batch_size=1))
    responses = seen[0]  # the prompt's responses together, then one by one
    assert len(responses) == 3 and responses[-1] in {"46", "76", "47", "99"}  # 2 samples + the teacher's answer
    assert not list((tmp_path / "s.parquet.parts").glob("part-*"))


def test_openai_backend_runs_the_check_with_its_tokenizer(tmp_path, prompts4, bad_model):
    from support.fake_openai import FakeOpenAIServer
    from dno_data.stages.sample import SampleConfig, run

    with FakeOpenAIServer(**FAKE_SERVER_SAFETY) as srv:
        with pytest.raises(DnoError, match="not a prefix"):
            run(SampleConfig.from_options(prompts=prompts4, output=tmp_path / "s.parquet", model="fake", backend="openai",
                             base_url=srv.base_url, tokenizer=bad_model, k=2, max_new_tokens=8))
        assert srv.stats.chat_requests == 0


NEWLINE_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                    "{% if add_generation_prompt %}assistant:\n{% endif %}")  # ChatML-like: the header ends in "\n"


@pytest.fixture(scope="module")
def newline_model(tmp_path_factory) -> Path:
    """A tiny random Llama whose BPE merges "\\n\\n" and "\\n " : a response that starts with a blank
    line or two spaces joins the header's newline, any other response does not."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    corpus = ["user: 12+34\nassistant:\n\n\nHello 46", "assistant:\n  Hello world\n\n", "Hello there 12 34 46 +"] * 50
    core.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<eos>",
                                  chat_template=NEWLINE_TEMPLATE)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    out = tmp_path_factory.mktemp("newline-template-model")
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_a_response_that_merges_with_the_header_is_dropped_and_counted(tmp_path, prompts4, newline_model,
                                                                       monkeypatch, capsys):
    """One legitimate sample starting with "\\n\\n" or two spaces does not fail the stage (its seed is
    fixed, so a rerun would hit it again): it is left out and counted in the summary."""
    import dno_data.generation.hf as hf
    from dno_data.artifacts import read_artifact
    from dno_data.generation import Completion
    from dno_data.models import load_tokenizer
    from dno_data.stages.sample import SampleConfig, run

    tok = load_tokenizer(newline_model)
    prompt = render_prompt(tok, MSGS)
    check_template_prefix(tok, prompt, ["Hello", "46"], "p", "m")
    for odd in ("\n\nHello", "  Hello"):  # the fixture does what it claims
        with pytest.raises(DnoError, match="not a prefix"):
            check_template_prefix(tok, prompt, [odd], "p", "m")

    def generate(self, prompts, params, seeds, messages=None):
        odd = iter(["\n\nHello", "  Hello"])
        return [[Completion(next(odd, "Hello") if i == 0 and k == 1 else "46", 2, "stop") for k in range(params.n)]
                for i in range(len(prompts))]

    monkeypatch.setattr(hf.HFGenerator, "generate", generate)
    out = run(SampleConfig.from_options(prompts=prompts4, output=tmp_path / "s.parquet", model=newline_model, k=2, threads=1,
                           batch_size=2))
    rows = read_artifact(out, "samples").to_pylist()
    assert len(rows) == 4 * 2 - 2  # the first prompt of each batch lost its second sample
    assert not any(r["response"].startswith(("\n", " ")) for r in rows)
    assert {(r["sample_index"]) for r in rows if r["response"] == "46"} == {0, 1}
    [line] = [x for x in capsys.readouterr().err.splitlines() if "breaks the template prefix" in x]
    assert line.split()[-1] == "2"
