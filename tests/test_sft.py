"""`dno sft`: the loss masks the prompt, EOS only after finished responses, the example sources
(teacher rows, each prompt's best non-truncated sample, a pairs file's chosen side), cycling to
--max-steps, the checkpoint, and one-line errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from conftest import pairs_row, problem_rows, sample_row, score_row
from dno_data.artifacts import to_table, write_artifact
from dno_data.errors import DnoError
from dno_data.training.sft import select_examples


def _samples_and_judgments():
    """Prompt p1: a (6, truncated), b (5), c (5, later index), teacher t (6); prompt p2: e (2), f (3)."""
    rows = [sample_row("a", "p1", "11", index=0), sample_row("b", "p1", "2", index=1),
            sample_row("c", "p1", "2 ", index=2), sample_row("t", "p1", "2", source="teacher"),
            sample_row("e", "p2", "7", index=0), sample_row("f", "p2", "8", index=1)]
    rows[0]["finish_reason"] = "length"
    scores = {"a": 6.0, "b": 5.0, "c": 5.0, "t": 6.0, "e": 2.0, "f": 3.0}
    judgments = [score_row(sid, r["prompt_id"], scores[sid], position=i) for i, (sid, r) in
                 enumerate(zip(scores, rows))]
    return rows, judgments


def test_best_picks_the_best_finished_policy_sample_ties_by_index():
    s, j = _samples_and_judgments()
    got = select_examples("best", samples=to_table(s, "samples"), judgments=to_table(j, "judgments")).to_pylist()
    # a scores 6 but stopped at the length limit; the teacher is never chosen; b and c tie: b has the lower index
    assert [(r["prompt_id"], r["example_id"], r["score"]) for r in got] == [("p1", "b", 5.0), ("p2", "f", 3.0)]
    assert not any(r["truncated"] for r in got)
    again = select_examples("best", samples=to_table(list(reversed(s)), "samples"),
                            judgments=to_table(list(reversed(j)), "judgments")).to_pylist()
    assert [r["example_id"] for r in again] == ["b", "f"]  # not the row order: the same pick
    high = select_examples("best", samples=to_table(s, "samples"), judgments=to_table(j, "judgments"), min_score=4)
    assert high["example_id"].to_pylist() == ["b"]  # p2's best (3) is below --min-score


def test_teacher_and_chosen_sources():
    s, _ = _samples_and_judgments()
    teacher = select_examples("teacher", samples=to_table(s, "samples")).to_pylist()
    assert [(r["example_id"], r["response"]) for r in teacher] == [("t", "2")]
    pairs = [pairs_row("p1", "t", "a"), pairs_row("p1", "t", "e"), pairs_row("p1", "b", "e")]
    chosen = select_examples("chosen", pairs=to_table(pairs, "pairs"))["example_id"].to_pylist()
    assert chosen == ["b", "t"]  # once per distinct chosen sample


def test_loss_is_the_response_tokens_nll_and_masks_the_prompt(tiny_model, tiny_tokenizer):
    import torch

    from dno_data.models import load_causal_lm
    from dno_data.training.data import build_sft_examples, collate_sft, encode_pair
    from dno_data.training.sft import NLL

    tok = tiny_tokenizer
    ids, mask = encode_pair(tok, "12+34=", "46")
    n_prompt = len(tok("12+34=", add_special_tokens=False)["input_ids"])
    assert mask == [0] * n_prompt + [1] * (len(ids) - n_prompt) and ids[-1] == tok.eos_token_id
    _, cut = encode_pair(tok, "12+34=", "4", truncated=True)
    assert sum(cut) == len(tok("4", add_special_tokens=False)["input_ids"])  # no EOS after a cut response

    rows = pa.table({"example_id": ["x", "y"], "prompt_id": ["p", "q"],
                     "messages": [[{"role": "user", "content": "12+34"}], [{"role": "user", "content": "5+5"}]],
                     "prompt_text": ["12+34=", "5+5="], "response": ["46", "10"], "truncated": [False, False]})
    examples, dropped = build_sft_examples(rows, tok, 32)
    assert dropped == 0
    for i, ex in enumerate(examples):
        ex["index"] = i
    batch = collate_sft(examples, tok.pad_token_id)
    model = load_causal_lm(tiny_model, "float32")
    model.eval()

    class S:
        keep_logits = False

    loss, figures = NLL.step(model, batch, S(), None)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
    want, n = 0.0, 0
    for r, ex in enumerate(examples):
        for pos in range(1, len(ex["ids"])):
            if ex["mask"][pos]:  # only response tokens (and the EOS) are scored
                want -= logp[r, pos - 1, ex["ids"][pos]].item()
                n += 1
    assert n == sum(sum(ex["mask"]) for ex in examples)
    assert loss.item() == pytest.approx(want / n, rel=1e-5)
    assert figures[1].item() == n


def _write_samples(tmp_path):
    rows = []
    for i, r in enumerate(problem_rows(6)):
        msgs = [{"role": "user", "content": r["prompt"]}]
        for k, resp in enumerate([r["reference"], "0"]):
            row = sample_row(f"s{i}-{k}", f"p{i}", resp, index=k, messages=msgs)
            row["prompt_text"] = r["prompt"] + "="
            rows.append(row)
        t = sample_row(f"t{i}", f"p{i}", r["reference"], source="teacher", messages=msgs)
        t["prompt_text"] = r["prompt"] + "="
        rows.append(t)
    return write_artifact(rows, tmp_path / "samples.parquet", "samples", None)


def test_sft_on_teacher_answers_cycles_to_max_steps_and_writes_a_checkpoint(tiny_model, tmp_path):
    from dno_data.stages.sft import SftConfig, run

    samples = _write_samples(tmp_path)
    out = tmp_path / "sft"
    cfg = SftConfig.from_options(data=samples, model=tiny_model, output=out, source="teacher", batch_size=2, max_steps=7,
                    learning_rate=3e-3, warmup_ratio=0.0, max_length=32, save_every=0, threads=1)
    run(cfg)
    m = json.loads((out / "dno-manifest.json").read_text())
    assert m["objective"] == "sft" and m["reference_model"] is None
    assert m["metrics"]["examples"] == 6 and m["metrics"]["steps"] == 7  # 3 steps a pass: cycled past one epoch
    assert m["metrics"]["passes"] == pytest.approx(14 / 6, abs=0.01)
    log = [json.loads(x) for x in (tmp_path / "sft.records" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 7 and log[-1]["loss"] < log[0]["loss"]
    assert (out / "config.json").exists() and not (tmp_path / "sft.records" / "ref_logps.parquet").exists()
    # the checkpoint is the model alone (+ its card and manifest); the log lies beside it
    assert {f.name for f in out.iterdir()} == {f.name for f in tiny_model.iterdir()} | {"README.md", "dno-manifest.json"}
    assert {f.name for f in (tmp_path / "sft.records").iterdir()} == {"train_log.jsonl", "dno-manifest.json"}
    assert "| loss | token negative log-likelihood (supervised fine-tuning) |" in (out / "README.md").read_text()
    mtime = (out / "dno-manifest.json").stat().st_mtime
    run(cfg)  # up to date: not redone
    assert (out / "dno-manifest.json").stat().st_mtime == mtime


@pytest.mark.parametrize("args, message", [
    (["--source", "best"], "--source best needs --judgments"),
    (["--source", "teacher", "--min-score", "5"], "--judgments and --min-score are for --source best"),
    (["--source", "sideways"], "--source 'sideways': choose one of"),
])
def test_bad_input_is_one_line(cli, tiny_model, tmp_path, args, message):
    samples = _write_samples(tmp_path)
    proc = cli("sft", samples, "--model", tiny_model, "-o", tmp_path / "out", *args)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    assert message in proc.stderr


def test_no_teacher_rows_is_one_line(tiny_model, tmp_path):
    from dno_data.stages.sft import SftConfig, run

    rows = [sample_row("a", "p1", "2")]
    samples = write_artifact(rows, tmp_path / "s.parquet", "samples", None)
    with pytest.raises(DnoError, match="nothing to fine-tune on with --source teacher"):
        run(SftConfig.from_options(data=samples, model=tiny_model, output=tmp_path / "o", source="teacher"))
