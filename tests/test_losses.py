"""The DNO contrastive loss and sequence log-probs, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from dno_data.losses import LOSSES, Labels, dno_loss, reward_accuracy, sequence_logps


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_worked_example_hard():
    loss, rewards = dno_loss(t(-10.0), t(-14.0), t(-11.0), t(-13.0), beta=0.1)
    assert loss.item() == pytest.approx(0.598139, abs=1e-6)
    assert loss.item() == pytest.approx(softplus(-0.2), rel=1e-12)  # -log sigmoid(0.2)
    assert rewards["chosen_reward"].tolist() == pytest.approx([0.1])  # 0.1 * (-10 - -11)
    assert rewards["rejected_reward"].tolist() == pytest.approx([-0.1])  # 0.1 * (-14 - -13)


def test_worked_example_soft():
    loss, _ = dno_loss(t(-10.0), t(-14.0), t(-11.0), t(-13.0), beta=0.1, target=t(0.75))
    assert loss.item() == pytest.approx(0.648139, abs=1e-6)
    assert loss.item() == pytest.approx(0.75 * softplus(-0.2) + 0.25 * softplus(0.2), rel=1e-12)


def test_soft_with_target_one_equals_hard():
    args = (t(-3.0, -7.0), t(-4.0, -2.0), t(-3.5, -6.0), t(-4.5, -2.5))
    hard, _ = dno_loss(*args, beta=0.05)
    soft, _ = dno_loss(*args, beta=0.05, target=t(1.0, 1.0))
    assert soft.item() == pytest.approx(hard.item(), rel=1e-12)


def test_soft_target_half_is_symmetric():
    # with t = 0.5 swapping chosen and rejected does not change the loss
    a, _ = dno_loss(t(-1.0), t(-5.0), t(-2.0), t(-3.0), beta=0.5, target=t(0.5))
    b, _ = dno_loss(t(-5.0), t(-1.0), t(-3.0), t(-2.0), beta=0.5, target=t(0.5))
    assert a.item() == pytest.approx(b.item(), rel=1e-12)


def test_batch_is_the_mean_of_per_pair_losses():
    pc, pr = t(-10.0, -2.0, -5.0), t(-14.0, -1.0, -5.0)
    rc, rr = t(-11.0, -3.0, -4.0), t(-13.0, -1.5, -6.0)
    beta = 0.1
    expected = []
    for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist()):
        h = (a - c) - (b - d)
        expected.append(softplus(-beta * h))
    loss, rewards = dno_loss(pc, pr, rc, rr, beta=beta)
    assert loss.item() == pytest.approx(sum(expected) / 3, rel=1e-12)
    assert rewards["chosen_reward"].tolist() == pytest.approx([beta * (a - c) for a, c in zip(pc.tolist(), rc.tolist())])
    assert rewards["rejected_reward"].tolist() == pytest.approx([beta * (b - d) for b, d in zip(pr.tolist(), rr.tolist())])


def test_soft_batch_with_per_pair_targets():
    pc, pr, rc, rr = t(-10.0, -2.0), t(-14.0, -1.0), t(-11.0, -3.0), t(-13.0, -1.5)
    tg = t(0.75, 0.6)
    beta = 0.2
    exp = []
    for a, b, c, d, y in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), tg.tolist()):
        z = beta * ((a - c) - (b - d))
        exp.append(y * softplus(-z) + (1 - y) * softplus(z))
    loss, _ = dno_loss(pc, pr, rc, rr, beta=beta, target=tg)
    assert loss.item() == pytest.approx(sum(exp) / 2, rel=1e-12)


def test_equal_policy_and_reference_gives_log2():
    x = t(-3.0, -8.0)
    loss, rewards = dno_loss(x, x + 1, x, x + 1, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))
    assert rewards["chosen_reward"].abs().max().item() == 0


def test_gradient_sign():
    chosen = torch.tensor([-10.0], requires_grad=True)
    rejected = torch.tensor([-14.0], requires_grad=True)
    loss, rewards = dno_loss(chosen, rejected, torch.tensor([-11.0]), torch.tensor([-13.0]), beta=0.1)
    loss.backward()
    assert chosen.grad.item() < 0  # raising log pi(y+) lowers the loss
    assert rejected.grad.item() > 0  # raising log pi(y-) raises it
    # d/dx softplus(-0.1 (x - c)) = -0.1 * sigmoid(-0.2)
    assert chosen.grad.item() == pytest.approx(-0.1 * torch.sigmoid(torch.tensor(-0.2)).item(), rel=1e-5)
    assert not rewards["chosen_reward"].requires_grad
    # and a step along the gradient really lowers it
    with torch.no_grad():
        better, _ = dno_loss(chosen + 0.5, rejected, torch.tensor([-11.0]), torch.tensor([-13.0]), beta=0.1)
    assert better.item() < loss.item()


# ---------------------------------------------------------------- the table of losses

def test_worked_example_ipo_sum():
    # summed log-ratios: a = 1, b = -1, h = 2; 1 / (2 beta) = 5: (2 - 5)^2 = 9
    loss, rewards = dno_loss(t(-10.0), t(-14.0), t(-11.0), t(-13.0), beta=0.1, loss="ipo-sum")
    assert loss.item() == pytest.approx(9.0, rel=1e-12)
    assert rewards["chosen_reward"].tolist() == pytest.approx([0.1])


def test_ipo_sum_is_zero_at_its_target_margin():
    # h = 1 / (2 beta) = 2.5 with beta = 0.2: a = 1.5, b = -1
    loss, _ = dno_loss(t(-8.5), t(-11.0), t(-10.0), t(-10.0), beta=0.2, loss="ipo-sum")
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_worked_example_ipo_per_token_means():
    """TRL's loss_type="ipo": each log-ratio divided by its answer's number of response tokens.
    a = 1 over 4 tokens, b = -1 over 2 tokens: (0.25 + 0.5 - 5)^2 = (-4.25)^2 = 18.0625."""
    labels = Labels(chosen_tokens=t(4), rejected_tokens=t(2))
    loss, rewards = dno_loss(t(-10.0), t(-14.0), t(-11.0), t(-13.0), beta=0.1, loss="ipo", labels=labels)
    assert loss.item() == pytest.approx(18.0625, rel=1e-12)
    assert rewards["chosen_reward"].tolist() == pytest.approx([0.1])  # the logged rewards stay summed


def test_ipo_batch_by_hand_and_one_token_answers_equal_ipo_sum():
    # pair 1: a = 3 over 3 tokens, b = -2 over 4: (1 + 0.5 - 2.5)^2 = 1 (beta = 0.2)
    # pair 2: a = 2.5 over 1 token, b = 0 over 1: (2.5 - 2.5)^2 = 0 -- with one token each it is ipo-sum
    pc, pr, rc, rr = t(-7.0, -1.5), t(-12.0, -3.0), t(-10.0, -4.0), t(-10.0, -3.0)
    labels = Labels(chosen_tokens=t(3, 1), rejected_tokens=t(4, 1))
    loss, _ = dno_loss(pc, pr, rc, rr, beta=0.2, loss="ipo", labels=labels)
    assert loss.item() == pytest.approx((1.0 + 0.0) / 2, rel=1e-12)
    one = Labels(chosen_tokens=t(1), rejected_tokens=t(1))
    ipo, _ = dno_loss(t(-10.0), t(-14.0), t(-11.0), t(-13.0), beta=0.1, loss="ipo", labels=one)
    assert ipo.item() == pytest.approx(9.0, rel=1e-12)
    # an empty answer counts as one token (TRL clamps the count at 1)
    empty = Labels(chosen_tokens=t(0), rejected_tokens=t(1))
    loss, _ = dno_loss(t(-10.0), t(-14.0), t(-11.0), t(-13.0), beta=0.1, loss="ipo", labels=empty)
    assert loss.item() == pytest.approx(9.0, rel=1e-12)


def test_ipo_without_token_counts_is_an_error():
    with pytest.raises(ValueError, match="token counts"):
        dno_loss(t(-10.0), t(-14.0), t(-11.0), t(-13.0), beta=0.1, loss="ipo")


def test_worked_example_sppo():
    # a = 1, b = -1; w+ = 0.75 -> target 0.25 / 0.1 = 2.5; w- = 0.25 -> -2.5
    labels = Labels(chosen_winrate=t(0.75), rejected_winrate=t(0.25))
    loss, _ = dno_loss(t(-10.0), t(-14.0), t(-11.0), t(-13.0), beta=0.1, loss="sppo", labels=labels)
    assert loss.item() == pytest.approx((1 - 2.5) ** 2 + (-1 + 2.5) ** 2, rel=1e-12)
    assert loss.item() == pytest.approx(4.5, rel=1e-12)


def test_sppo_without_winrates_is_the_hard_variant():
    # unknown (NaN) win-rates count as 1 for the chosen and 0 for the rejected: (a - 5)^2 + (b + 5)^2
    labels = Labels(chosen_winrate=t(float("nan"), 0.5), rejected_winrate=t(float("nan"), 0.5))
    pc, pr, rc, rr = t(-10.0, -3.0), t(-14.0, -3.0), t(-11.0, -4.0), t(-13.0, -2.0)
    loss, _ = dno_loss(pc, pr, rc, rr, beta=0.1, loss="sppo", labels=labels)
    first = (1 - 5) ** 2 + (-1 + 5) ** 2  # 32
    second = (1 - 0) ** 2 + (-1 - 0) ** 2  # win-rate 1/2 on both sides: target log-ratio 0
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-12)
    plain, _ = dno_loss(t(-10.0), t(-14.0), t(-11.0), t(-13.0), beta=0.1, loss="sppo")
    assert plain.item() == pytest.approx(32.0, rel=1e-12)


def test_dpo_is_the_sigmoid_loss():
    loss, _ = dno_loss(t(-10.0), t(-14.0), t(-11.0), t(-13.0), beta=0.1, loss="dpo")
    assert loss.item() == pytest.approx(softplus(-0.2), rel=1e-12)


def test_every_loss_has_its_minimum_direction():
    """Raising log pi(y+) (from policy = reference) lowers every loss."""
    for name in LOSSES:
        x = torch.tensor([-5.0], dtype=torch.float64, requires_grad=True)
        labels = Labels(target=t(0.9), chosen_winrate=t(0.8), rejected_winrate=t(0.2),
                        kl=torch.tensor(0.0, dtype=torch.float64),  # kto's reference point at policy = reference
                        chosen_tokens=t(3), rejected_tokens=t(2))
        loss, _ = dno_loss(x, t(-6.0), t(-5.0), t(-6.0), beta=0.1, loss=name, labels=labels)
        loss.backward()
        assert x.grad.item() < 0, name


def test_unknown_loss_name():
    with pytest.raises(ValueError, match="unknown loss"):
        dno_loss(t(-1.0), t(-2.0), t(-1.0), t(-2.0), beta=0.1, loss="nope")


def test_reward_accuracy_counts_ties_as_half():
    assert reward_accuracy(t(0.0, 0.0)).item() == 0.5
    assert reward_accuracy(t(1.0, -1.0, 0.0, 2.0)).item() == pytest.approx((2 + 0.5) / 4)
    assert reward_accuracy(t(-1.0)).item() == 0.0


# ---------------------------------------------------------------- sequence_logps

def test_sequence_logps_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, dtype=torch.float64)
    input_ids = torch.tensor([[1, 2, 3, 0, 1], [3, 3, 2, 1, 0]])
    # row 0: prompt = tokens 0..1, response = tokens 2..4
    # row 1: prompt = token 0, response = tokens 1..2, padding 3..4
    loss_mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
    got = sequence_logps(logits, input_ids, loss_mask)

    lp = torch.log_softmax(logits, dim=-1)
    # token at position i is predicted by the logits at position i - 1
    row0 = lp[0, 1, 3] + lp[0, 2, 0] + lp[0, 3, 1]
    row1 = lp[1, 0, 3] + lp[1, 1, 2]
    assert got.tolist() == pytest.approx([row0.item(), row1.item()], rel=1e-6)


def test_sequence_logps_ignores_masked_positions():
    torch.manual_seed(1)
    logits = torch.randn(1, 4, 3)
    ids = torch.tensor([[0, 1, 2, 1]])
    mask = torch.tensor([[0, 0, 1, 1]])
    base = sequence_logps(logits, ids, mask)
    # changing the prompt token ids / the last logits (which predict nothing) changes nothing
    changed_logits = logits.clone()
    changed_logits[0, 3] = torch.tensor([9.0, -9.0, 0.0])
    assert sequence_logps(changed_logits, ids, mask).item() == pytest.approx(base.item(), abs=1e-6)
    changed_ids = ids.clone()
    changed_ids[0, 0] = 2
    assert sequence_logps(logits, changed_ids, mask).item() == pytest.approx(base.item(), abs=1e-6)
    # but the logits predicting a response token do matter
    other = logits.clone()
    other[0, 1] = torch.tensor([0.0, 0.0, 5.0])
    assert sequence_logps(other, ids, mask).item() != pytest.approx(base.item(), abs=1e-3)


def test_sequence_logps_of_a_certain_sequence_is_zero():
    ids = torch.tensor([[0, 1, 2]])
    logits = torch.full((1, 3, 3), -1e4)
    logits[0, 0, 1] = 1e4  # predicts 1 at position 1
    logits[0, 1, 2] = 1e4  # predicts 2 at position 2
    assert sequence_logps(logits, ids, torch.tensor([[0, 1, 1]])).item() == pytest.approx(0.0, abs=1e-4)
    # an all-zero mask sums nothing
    assert sequence_logps(torch.randn(1, 3, 3), ids, torch.zeros(1, 3, dtype=torch.long)).item() == 0.0


def test_sequence_logps_row_by_row_equals_batched(monkeypatch):
    import dno_data.losses as losses

    torch.manual_seed(2)
    logits = torch.randn(3, 6, 11)
    ids = torch.randint(0, 11, (3, 6))
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0]])
    batched = sequence_logps(logits, ids, mask)
    monkeypatch.setattr(losses, "ROW_BY_ROW_BYTES", 0)
    assert torch.allclose(sequence_logps(logits, ids, mask), batched, atol=1e-6)
