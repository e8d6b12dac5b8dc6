"""A local reward model (LlamaForSequenceClassification) as the judge."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from conftest import write_judge_samples
from dno_data.artifacts import read_artifact
from dno_data.errors import DnoError
from dno_data.judges import Candidate, Group, make_judge

MSGS = [{"role": "user", "content": "12+34"}]


def build_reward_model(out: Path, num_labels: int = 1, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from dno_data.tasks import addition as demo_task

    tok = demo_task.build_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         num_labels=num_labels, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id)
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():  # a visible spread of rewards
        model.score.weight.mul_(20.0)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def reward_model(tmp_path_factory) -> Path:
    return build_reward_model(tmp_path_factory.mktemp("reward-model"))


def manual_reward(path: Path, messages: list[dict], response: str) -> float:
    """r for one text, unbatched and unpadded: the model's scalar on the chat-templated conversation."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    text = tok.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")
    assert ids["input_ids"].shape[1] == len(text.replace(tok.eos_token, "x"))  # one token a character
    with torch.no_grad():
        return float(model(**ids).logits[0, 0])


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_reward_judge_scores_and_pairs(reward_model):
    responses = ["46", "45", "4600", "1"]  # different lengths: the batch is padded
    group = Group("p1", MSGS, "46", [Candidate(f"s{i}", r, "policy") for i, r in enumerate(responses)])
    judge = make_judge(f"reward:{reward_model}", batch_size=3)
    assert judge.kind == "score"
    rows = judge.judge(group)
    scores = [r for r in rows if r["kind"] == "score"]
    pairs = [r for r in rows if r["kind"] == "pair"]
    assert len(scores) == 4 and len(pairs) == 6  # one per candidate, one per unordered pair
    assert len({r["judgment_id"] for r in rows}) == 10
    expected = {f"s{i}": manual_reward(reward_model, MSGS, r) for i, r in enumerate(responses)}
    assert len({round(v, 4) for v in expected.values()}) == 4  # the rewards really differ
    for r in scores:
        assert r["status"] == "ok" and r["sample_id_b"] is None
        assert r["score"] == pytest.approx(expected[r["sample_id_a"]], abs=1e-4)
    for r in pairs:
        assert r["status"] == "ok" and r["score"] is None
        ra, rb = expected[r["sample_id_a"]], expected[r["sample_id_b"]]
        assert r["prob_a_wins"] == pytest.approx(sigmoid(ra - rb), abs=1e-4)
    assert {r["judge_id"] for r in rows} == {judge.judge_id}
    # batching does not change the rewards
    one_by_one = make_judge(f"reward:{reward_model}", batch_size=1).judge(group)
    assert [r["score"] for r in one_by_one] == pytest.approx([r["score"] for r in rows], abs=1e-4)
    assert make_judge(f"reward:{reward_model}", batch_size=1).judge_id == judge.judge_id


def test_reward_judge_stage_and_best_worst_pairs(tmp_path, reward_model):
    from dno_data.stages.judge import JudgeConfig, run
    from dno_data.stages.pairs import PairsConfig, run as pairs_run

    groups = [(f"{a}+{b}", [(str(a + b), "policy"), (str(a + b + 1), "policy"), (str(a * b), "policy"),
                            (str(a + b), "teacher")]) for a, b in ((12, 34), (5, 7), (40, 2))]
    samples = write_judge_samples(tmp_path / "samples.parquet", groups)
    out = run(JudgeConfig.from_options(samples=samples, output=tmp_path / "judgments.parquet", judge=f"reward:{reward_model}", batch_size=4,
                          prompts_per_part=2))
    rows = read_artifact(out, "judgments").to_pylist()
    assert sum(r["kind"] == "score" for r in rows) == 12 and sum(r["kind"] == "pair" for r in rows) == 3 * 6
    assert all(r["status"] == "ok" for r in rows)
    pairs = read_artifact(pairs_run(PairsConfig.from_options(judgments=out, samples=samples, output=tmp_path / "pairs.parquet", rule="best-worst")),
                          "pairs").to_pylist()
    assert pairs and {p["rule"] for p in pairs} == {"best-worst"}
    score = {r["sample_id_a"]: r["score"] for r in rows if r["kind"] == "score"}
    for p in pairs:
        assert p["chosen_sample_id"] != p["rejected_sample_id"]
        assert score[p["chosen_sample_id"]] > score[p["rejected_sample_id"]]
    with pytest.raises(DnoError, match="drop --mode"):  # a reward model scores; pairs come with it
        make_judge(f"reward:{reward_model}", mode="pairwise")


def test_reward_folder_without_weights(tmp_path, reward_model):
    empty = tmp_path / "no-weights"
    shutil.copytree(reward_model, empty, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    with pytest.raises(DnoError, match="weights"):
        make_judge(f"reward:{empty}")
    with pytest.raises(DnoError, match="no such model folder"):
        make_judge(f"reward:{tmp_path / 'missing'}")


def test_reward_model_with_two_labels_is_refused(tmp_path):
    two = build_reward_model(tmp_path / "two-labels", num_labels=2)
    with pytest.raises(DnoError, match="num_labels=1"):
        make_judge(f"reward:{two}")
