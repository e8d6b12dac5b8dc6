"""`--loss kto`: the loss against a hand computation and against TRL's KTOTrainer on the same log-probs,
the KL sequences as TRL builds them, and a training run on a real pairs file."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from dno_data.losses import LOSSES, Labels, dno_loss, kl_estimate

# Four pairs: policy and reference log-probs of the chosen and rejected answers, and of the 8 KL sequences.
POLICY_CHOSEN = [-10.0, -4.0, -7.5, -2.0]
POLICY_REJECTED = [-14.0, -3.0, -9.0, -6.5]
REF_CHOSEN = [-11.0, -4.5, -7.0, -3.0]
REF_REJECTED = [-13.0, -2.0, -9.5, -6.0]
POLICY_KL = [-12.0, -6.0, -8.0, -3.0, -15.0, -4.0, -10.0, -7.0]
REF_KL = [-12.5, -6.5, -7.0, -3.5, -14.0, -4.5, -10.5, -7.25]


def t(xs):
    return torch.tensor(xs, dtype=torch.float64)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def by_hand(beta: float, wd: float, wu: float) -> float:
    """KTO as the paper's Eq. (7) and TRL write it, on the lists above, one example at a time."""
    kl = max(0.0, sum(p - r for p, r in zip(POLICY_KL, REF_KL)) / len(POLICY_KL))
    losses = [wd * (1 - sigmoid(beta * ((p - r) - kl))) for p, r in zip(POLICY_CHOSEN, REF_CHOSEN)]
    losses += [wu * (1 - sigmoid(beta * (kl - (p - r)))) for p, r in zip(POLICY_REJECTED, REF_REJECTED)]
    return sum(losses) / len(losses)


def dno_kto(beta: float, wd: float, wu: float) -> float:
    kl = kl_estimate(t(POLICY_KL), t(REF_KL))
    labels = Labels(kl=kl, desirable_weight=wd, undesirable_weight=wu)
    loss, _ = dno_loss(t(POLICY_CHOSEN), t(POLICY_REJECTED), t(REF_CHOSEN), t(REF_REJECTED), beta, loss="kto",
                       labels=labels)
    return loss.item()


def test_worked_example_of_the_docstring():
    labels = Labels(kl=torch.tensor(0.5, dtype=torch.float64))
    loss, _ = dno_loss(t([-10.0]), t([-14.0]), t([-11.0]), t([-13.0]), 0.1, loss="kto", labels=labels)
    assert loss.item() == pytest.approx(0.475036, abs=1e-6)
    assert loss.item() == pytest.approx(((1 - sigmoid(0.05)) + (1 - sigmoid(0.15))) / 2, rel=1e-12)


@pytest.mark.parametrize("beta,wd,wu", [(0.1, 1.0, 1.0), (2.0, 1.0, 1.33), (0.5, 0.75, 1.0)])
def test_kto_equals_the_hand_computation(beta, wd, wu):
    assert dno_kto(beta, wd, wu) == pytest.approx(by_hand(beta, wd, wu), abs=1e-12)


def test_the_kl_estimate_is_clamped_at_zero_and_detached():
    policy = t([-5.0, -6.0]).requires_grad_()
    kl = kl_estimate(policy, t([-4.0, -4.0]))  # the mean difference is -1.5
    assert kl.item() == 0.0 and not kl.requires_grad
    assert kl_estimate(t([-3.0]), t([-4.0]), reduce=lambda x: x * 3).item() == 3.0  # reduced before the clamp


def test_equal_policy_and_reference_gives_one_half():
    x = t([-3.0, -8.0])
    labels = Labels(kl=kl_estimate(x, x))
    loss, _ = dno_loss(x, x + 1, x, x + 1, 0.1, loss="kto", labels=labels)
    assert loss.item() == pytest.approx(0.5)
    assert LOSSES["kto"].needs_kl and not LOSSES["dpo"].needs_kl


def test_kto_needs_the_kl_estimate():
    with pytest.raises(ValueError, match="KL estimate"):
        dno_loss(t([-1.0]), t([-2.0]), t([-1.0]), t([-2.0]), 0.1, loss="kto")


# ---------------------------------------------------------------- TRL's own code on the same log-probs

class _RowLogps(torch.nn.Module):
    """A stand-in causal LM for TRL's fused-head forward: row i of `input_ids` names (in its first token)
    which log-prob its completion has; the per-token log-probs put it on the first position."""

    def __init__(self, table: dict[int, float]):
        super().__init__()
        self.table = table

    def forward(self, input_ids, attention_mask=None, labels=None, fused_lm_head=False, **_):
        n, width = input_ids.shape
        log_probs = torch.zeros(n, width - 1, dtype=torch.float64)
        log_probs[:, 0] = torch.tensor([self.table[int(i)] for i in input_ids[:, 0]], dtype=torch.float64)
        zeros = torch.zeros(n, width - 1)
        return SimpleNamespace(log_probs=log_probs, entropy=zeros, mean_logits=zeros, aux_loss=None)


def trl_kto(beta: float, wd: float, wu: float) -> float:
    """TRL's KTOTrainer._compute_loss on the same log-probs: the batch is TRL's unpaired form (the chosen
    answers desirable, the rejected undesirable), reference log-probs precomputed as TRL stores them."""
    trl = pytest.importorskip("trl")
    trainer_cls = trl.KTOTrainer
    if not hasattr(trainer_cls, "_compute_loss"):  # older TRL: a kto_loss method of its own
        pytest.skip(f"TRL {trl.__version__} has no KTOTrainer._compute_loss")
    n = len(POLICY_CHOSEN)
    policy = POLICY_CHOSEN + POLICY_REJECTED
    table = {i + 1: v for i, v in enumerate(policy)} | {100 + i: v for i, v in enumerate(POLICY_KL)}
    model = _RowLogps(table).train()
    width = 3
    ids = torch.tensor([[i + 1] + [0] * (width - 1) for i in range(2 * n)])
    kl_ids = torch.tensor([[100 + i] + [0] * (width - 1) for i in range(2 * n)])
    mask = torch.tensor([[0] + [1] * (width - 1)] * (2 * n))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": mask,
              "KL_input_ids": kl_ids, "KL_attention_mask": torch.ones_like(kl_ids), "KL_completion_mask": mask,
              "label": torch.tensor([True] * n + [False] * n),
              "ref_logps": torch.tensor(REF_CHOSEN + REF_REJECTED, dtype=torch.float64),
              "ref_KL_logps": torch.tensor(REF_KL, dtype=torch.float64)}
    trainer = object.__new__(trainer_cls)  # no Trainer machinery: the loss is the part under test
    accelerator = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x)
    vars(trainer).update(model=model, accelerator=accelerator, beta=beta, desirable_weight=wd,
                         undesirable_weight=wu, loss_type="kto", calculate_KL=True, precompute_ref_logps=True,
                         aux_loss_enabled=False, _metrics=defaultdict(lambda: defaultdict(list)),
                         _total_train_tokens=0, _tp_size=1)
    loss = trainer._compute_loss(model, inputs, return_outputs=False)
    return loss.item()


@pytest.mark.parametrize("beta,wd,wu", [(0.1, 1.0, 1.0), (2.0, 1.0, 1.33), (0.5, 0.75, 1.0)])
def test_kto_equals_trl_on_the_same_log_probs(beta, wd, wu):
    assert dno_kto(beta, wd, wu) == pytest.approx(trl_kto(beta, wd, wu), abs=1e-6)
    assert trl_kto(beta, wd, wu) == pytest.approx(by_hand(beta, wd, wu), abs=1e-6)


# ---------------------------------------------------------------- the KL sequences and a training run

def test_kl_sequences_rotate_the_batch_answers_by_one_as_trl_does():
    from dno_data.training.data import attach_kl_sequences

    def ex(p, c, r):  # prompt ids p, chosen answer c, rejected answer r
        return {"chosen_ids": p + c, "chosen_mask": [0] * len(p) + [1] * len(c),
                "rejected_ids": p + r, "rejected_mask": [0] * len(p) + [1] * len(r)}

    examples = [ex([1], [11], [21]), ex([2, 2], [12], [22, 22]), ex([3], [13], [23])]
    attach_kl_sequences(examples, batch_size=2, max_length=3)
    # block 1: unpaired [c1, c2, r1, r2] with prompts [x1, x2, x1, x2]; example k takes answer k - 1
    assert [examples[0]["kl_chosen_ids"], examples[1]["kl_chosen_ids"]] == [[1, 22, 22], [2, 2, 11]]
    assert [examples[0]["kl_rejected_ids"], examples[1]["kl_rejected_ids"]] == [[1, 12], [2, 2, 21]]
    assert examples[0]["kl_chosen_mask"] == [0, 1, 1] and examples[1]["kl_chosen_mask"] == [0, 0, 1]  # cut at 3
    # block 2 holds one pair: its two examples swap answers (TRL's rotation within a batch of two)
    assert examples[2]["kl_chosen_ids"] == [3, 23] and examples[2]["kl_rejected_ids"] == [3, 13]


def test_kto_trains_with_its_reference_point(tmp_path, tiny_model, tiny_tokenizer):
    import pyarrow.parquet as pq
    from test_training import history, manifest, train_cfg, write_pairs

    from dno_data.losses import sequence_logps
    from dno_data.models import load_causal_lm
    from dno_data.stages.train import run
    from dno_data.training.data import attach_kl_sequences, build_examples, collate, training_order

    pairs = write_pairs(tmp_path / "pairs.parquet", n=32)
    run(train_cfg(pairs, tiny_model, tmp_path / "kto", loss="kto", batch_size=4, learning_rate=1e-2,
                  undesirable_weight=1.5))
    h = history(tmp_path / "kto")
    assert len(h) == 8 and all(math.isfinite(x["loss"]) for x in h)
    assert h[0]["loss"] == pytest.approx((1.0 * 0.5 + 1.5 * 0.5) / 2, abs=1e-6)  # policy = reference, KL 0
    assert h[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert sum(x["margin"] for x in h[4:]) > 0
    m = manifest(tmp_path / "kto")
    assert m["options"]["loss"] == "kto" and m["options"]["undesirable_weight"] == 1.5 and "final_kl" in m["metrics"]

    # The reference's log-probs of the KL sequences are those of the prompt with another pair's answer.
    ref = pq.read_table(tmp_path / "kto.records" / "ref_logps.parquet").to_pylist()
    examples, _ = build_examples(pq.read_table(pairs), tiny_tokenizer, 32)
    examples = [examples[k] for k in training_order(examples, 0)]
    attach_kl_sequences(examples, 4, 32)
    for i, e in enumerate(examples):
        e["index"] = i
    model = load_causal_lm(tiny_model, "float32").eval()
    b = collate(examples[:4], tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=b["kl_input_ids"], attention_mask=b["kl_attention_mask"]).logits
        expected = sequence_logps(logits, b["kl_input_ids"], b["kl_loss_mask"]).tolist()
    got = [r["ref_kl_chosen"] for r in ref[:4]] + [r["ref_kl_rejected"] for r in ref[:4]]
    assert [r["pair_id"] for r in ref[:4]] == [e["pair_id"] for e in examples[:4]]
    assert got == pytest.approx(expected, abs=1e-5)
    answer = tiny_tokenizer.decode(examples[1]["kl_chosen_ids"][examples[1]["kl_chosen_mask"].index(1):],
                                   skip_special_tokens=True)
    first = pq.read_table(pairs).to_pylist()
    assert answer in {r["chosen"][0]["content"] for r in first}  # pair 2's KL sequence: pair 1's chosen answer


@pytest.mark.slow  # two torchrun processes load torch: about 30 s on 2 cores
def test_kto_on_two_processes(tmp_path, tiny_model):
    """The KL estimate is averaged over the processes (TRL gathers it); the run ends like one process's.

    Run with `pytest -m slow tests/test_kto.py`."""
    from test_training import _torchrun, history, write_pairs

    pairs = write_pairs(tmp_path / "pairs.parquet", n=32)
    two = _torchrun(2, pairs, "-o", tmp_path / "two", "--model", tiny_model, "--loss", "kto", "--batch-size", "2",
                    "--learning-rate", "1e-2", "--max-length", "32", "--save-every", "0", "--warmup-ratio", "0",
                    "--threads", "1")
    assert two.returncode == 0, two.stderr[-3000:]
    h = history(tmp_path / "two")
    assert len(h) == 8 and h[0]["loss"] == pytest.approx(0.5, abs=1e-6) and h[0]["kl"] == pytest.approx(0.0)
    assert all(math.isfinite(x["loss"]) and x["kl"] >= 0 for x in h)


def test_kto_with_one_pair_a_batch_is_one_error_line(tmp_path, tiny_model, cli):
    from test_training import write_pairs

    pairs = write_pairs(tmp_path / "pairs.parquet", n=4)
    r = cli("train", pairs, "--model", tiny_model, "-o", tmp_path / "ckpt", "--loss", "kto", "--batch-size", "1")
    assert r.returncode == 1 and r.stderr.startswith("error:") and "--batch-size 2" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and not (tmp_path / "ckpt").exists()
