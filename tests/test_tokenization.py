"""`encode_pair` keeps the prompt/response boundary exact; `build_examples` drops over-long prompts."""

from __future__ import annotations

import pytest

from conftest import pairs_row
from dno_data.artifacts import to_table
from dno_data.training import build_examples, collate, encode_pair


@pytest.fixture(scope="module")
def bpe_tokenizer():
    """A tiny BPE where "ab" is one merged token: tokenizing "xa" + "by" jointly gives x|ab|y."""
    from tokenizers import Tokenizer, decoders, models, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer = trainers.BpeTrainer(vocab_size=40, special_tokens=["<unk>", "</s>"], show_progress=False,
                                  initial_alphabet=list("abcxyz"))
    core.train_from_iterator(["ab" * 20, "abab xab aby", "xyz ab"] * 50, trainer)
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>", unk_token="<unk>")


@pytest.mark.parametrize("prompt,response", [("12+34=", "46"), ("5+5=", "10"), ("1+1=", "")])
def test_mask_covers_exactly_the_response_and_eos(tiny_tokenizer, prompt, response):
    tok = tiny_tokenizer
    ids, mask = encode_pair(tok, prompt, response)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert len(ids) == len(mask)
    assert mask == [0] * n_prompt + [1] * (len(ids) - n_prompt)
    response_ids = [i for i, m in zip(ids, mask) if m]
    assert response_ids[-1] == tok.eos_token_id
    assert tok.decode(response_ids) == response + tok.eos_token
    assert tok.decode(response_ids, skip_special_tokens=True) == response
    assert tok.decode(ids[:n_prompt]) == prompt


def test_bpe_fixture_really_merges_across_the_boundary(bpe_tokenizer):
    tok = bpe_tokenizer
    joined = tok.convert_ids_to_tokens(tok("xaby", add_special_tokens=False)["input_ids"])
    assert "ab" in joined  # a naive tokenize(prompt + response) would blur the boundary
    assert tok.convert_ids_to_tokens(tok("xa", add_special_tokens=False)["input_ids"]) == ["x", "a"]


def test_boundary_stays_exact_with_merging_bpe(bpe_tokenizer):
    tok = bpe_tokenizer
    prompt, response = "xa", "by"
    ids, mask = encode_pair(tok, prompt, response)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids  # prompt ids are a prefix
    assert mask == [0] * len(prompt_ids) + [1] * (len(ids) - len(prompt_ids))
    response_ids = ids[len(prompt_ids):]
    assert tok.decode(response_ids, skip_special_tokens=True) == response
    assert tok.decode(response_ids) == response + "</s>"
    assert response_ids[-1] == tok.eos_token_id


def test_build_examples_drops_pairs_whose_prompt_is_too_long(tiny_tokenizer):
    tok = tiny_tokenizer
    long_prompt = "1" * 30 + "+1="  # 33 tokens
    rows = [pairs_row("p1", "a", "b", "2", "3", prompt_text="1+1="),
            pairs_row("p2", "c", "d", "2", "3", prompt_text=long_prompt)]
    examples, too_long = build_examples(to_table(rows, "pairs"), tok, max_length=16)
    assert too_long == 1
    assert [e["pair_id"] for e in examples] == ["a>b"]
    ex = examples[0]
    assert ex["chosen_ids"] == tok("1+1=2", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ex["chosen_mask"] == [0, 0, 0, 0, 1, 1]
    assert ex["rejected_ids"][-2:] == [tok.convert_tokens_to_ids("3"), tok.eos_token_id]
    assert ex["target"] == 1.0


def test_build_examples_truncates_long_responses(tiny_tokenizer):
    rows = [pairs_row("p1", "a", "b", "1" * 20, "3", prompt_text="1+1=")]
    examples, too_long = build_examples(to_table(rows, "pairs"), tiny_tokenizer, max_length=8)
    assert too_long == 0
    assert len(examples[0]["chosen_ids"]) == 8
    assert examples[0]["chosen_mask"] == [0, 0, 0, 0, 1, 1, 1, 1]


def test_build_examples_renders_messages_without_prompt_text(tiny_tokenizer):
    rows = [pairs_row("p1", "a", "b", "2", "3", prompt_text=None)]
    examples, _ = build_examples(to_table(rows, "pairs"), tiny_tokenizer, max_length=16)
    # MSGS is [{"role": "user", "content": "1+1"}] -> chat template "1+1="
    assert examples[0]["chosen_ids"][:4] == tiny_tokenizer("1+1=", add_special_tokens=False)["input_ids"]


def test_collate_stacks_chosen_then_rejected(tiny_tokenizer):
    rows = [pairs_row("p1", "a", "b", "22", "3"), pairs_row("p2", "c", "d", "4", "555")]
    examples, _ = build_examples(to_table(rows, "pairs"), tiny_tokenizer, max_length=16)
    for i, ex in enumerate(examples):
        ex["index"] = i
    pad = tiny_tokenizer.pad_token_id
    batch = collate(examples, pad)
    ids, attn, mask = batch["input_ids"], batch["attention_mask"], batch["loss_mask"]
    assert ids.shape == (4, 8)  # "1+1=" + "555" + EOS
    assert ids[0, : len(examples[0]["chosen_ids"])].tolist() == examples[0]["chosen_ids"]
    assert ids[2, : len(examples[0]["rejected_ids"])].tolist() == examples[0]["rejected_ids"]
    assert ids[0, -1].item() == pad and attn[0, -1].item() == 0 and mask[0, -1].item() == 0
    assert attn.sum(1).tolist() == [7, 6, 6, 8]
    assert mask.sum(1).tolist() == [3, 2, 2, 4]
    assert batch["index"].tolist() == [0, 1]
