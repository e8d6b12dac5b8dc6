"""Contrastive losses over sequence log-probs, selected by name from one table (`LOSSES`).

Every loss is a pure function of the per-pair log-ratios against the reference,
a = log pi(y+) - log pi_ref(y+) and b = log pi(y-) - log pi_ref(y-), of beta, and of the
pair's labels (`Labels`: the soft target and the two win-rates). It returns one loss per
pair; `dno_loss` averages them. A new loss is one function plus one entry in `LOSSES`, whose
help line is `dno train --loss`'s help. torch is imported inside the functions, so the
registry (and the --loss help and check) loads without it.

  hard (DNO-Prct):    -log sigmoid(beta (a - b))
  dpo:                the same formula; the name for training against a fixed reference
                      (`dno train --reference DIR`, e.g. offline DPO against pi_1)
  soft (Algorithm 1): -[t log sigmoid(beta (a - b)) + (1 - t) log sigmoid(-beta (a - b))],
                      t = sigmoid(r(y+) - r(y-)) from the pairs' win-rates
  ipo (Azar et al., as TRL's DPOTrainer loss_type="ipo" computes it):
                      (a / n+ - b / n- - 1 / (2 beta))^2, n = the answer's number of response
                      tokens (at least 1): the log-ratios are per-token means, so beta does not
                      depend on the answers' lengths (the form the IPO authors used)
  ipo-sum:            (a - b - 1 / (2 beta))^2 over summed log-probs (the unnormalised form; its
                      square grows with the answers' lengths)
  sppo (Wu et al.):   (a - (w+ - 1/2) / beta)^2 + (b - (w- - 1/2) / beta)^2, w = the sample's
                      win-rate against the policy; a missing win-rate counts as 1 for the
                      chosen and 0 for the rejected side (then it is TRL's `sppo_hard`)
  kto (Ethayarajh et al. 2024, as TRL's KTOTrainer computes it):
                      a pair is one desirable example (the chosen answer) and one undesirable
                      one (the rejected answer), as TRL's `unpair_preference_dataset` makes
                      them; per example 1 - sigmoid(beta (a - z0)) (desirable, times
                      lambda_D) or 1 - sigmoid(beta (z0 - b)) (undesirable, times lambda_U),
                      and the pair's loss is their mean, so the batch mean is TRL's mean over
                      its 2n examples. z0, the reference point, is the batch's KL estimate:
                      mean(log pi - log pi_ref) over mismatched (prompt, answer) sequences,
                      clamped at 0 and detached (`Labels.kl`; dno_data/training/data.py builds
                      the sequences as TRL does, dno_data/training/fit.py computes it)

Worked example (used in tests): beta = 0.1, policy log-probs (-10, -14), reference
(-11, -13): a = 1, b = -1, h = a - b = 2, beta*h = 0.2,
hard loss = -log sigmoid(0.2) = log(1 + e^-0.2) = 0.598139;
soft with t = 0.75: 0.75 * 0.598139 + 0.25 * log(1 + e^0.2) = 0.448604 + 0.199533 = 0.648139;
ipo-sum: (2 - 5)^2 = 9; ipo with 4 chosen and 2 rejected response tokens:
(1/4 - (-1)/2 - 5)^2 = (0.75 - 5)^2 = 18.0625; sppo with w+ = 0.75, w- = 0.25: (1 - 2.5)^2 + (-1 + 2.5)^2 = 4.5;
kto with z0 = 0.5 and weights 1: desirable 1 - sigmoid(0.1 * 0.5) = 0.487503, undesirable
1 - sigmoid(0.1 * 1.5) = 0.462570, the pair's loss their mean 0.475036.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Labels:
    """What a loss needs besides the log-ratios: what each pair says (per-pair tensors), and KTO's
    batch-level reference point and weights (None where a loss does not need them)."""

    target: torch.Tensor | None = None  # soft label P(y+ > y-)
    chosen_winrate: torch.Tensor | None = None  # E_{y'~policy} P(y+ > y'); NaN = unknown
    rejected_winrate: torch.Tensor | None = None
    kl: torch.Tensor | None = None  # KTO's reference point z0: the batch's KL estimate, >= 0, detached
    desirable_weight: float = 1.0  # KTO's lambda_D, on the chosen answers' losses
    undesirable_weight: float = 1.0  # KTO's lambda_U, on the rejected answers' losses
    chosen_tokens: torch.Tensor | None = None  # number of response tokens of each chosen answer (IPO's means)
    rejected_tokens: torch.Tensor | None = None


def hard(a: torch.Tensor, b: torch.Tensor, beta: float, labels: Labels) -> torch.Tensor:
    import torch.nn.functional as F

    return -F.logsigmoid(beta * (a - b))


def soft(a: torch.Tensor, b: torch.Tensor, beta: float, labels: Labels) -> torch.Tensor:
    if labels.target is None:
        raise ValueError("the soft loss needs the pairs' target")
    import torch.nn.functional as F

    z, t = beta * (a - b), labels.target
    return -(t * F.logsigmoid(z) + (1 - t) * F.logsigmoid(-z))


def ipo(a: torch.Tensor, b: torch.Tensor, beta: float, labels: Labels) -> torch.Tensor:
    if labels.chosen_tokens is None or labels.rejected_tokens is None:
        raise ValueError("the ipo loss needs the answers' token counts (Labels.chosen_tokens, rejected_tokens)")
    n_chosen = labels.chosen_tokens.to(a.dtype).clamp(min=1)
    n_rejected = labels.rejected_tokens.to(b.dtype).clamp(min=1)
    return (a / n_chosen - b / n_rejected - 1 / (2 * beta)) ** 2


def ipo_sum(a: torch.Tensor, b: torch.Tensor, beta: float, labels: Labels) -> torch.Tensor:
    return (a - b - 1 / (2 * beta)) ** 2


def sppo(a: torch.Tensor, b: torch.Tensor, beta: float, labels: Labels) -> torch.Tensor:
    wc = _known(labels.chosen_winrate, a, 1.0)
    wr = _known(labels.rejected_winrate, b, 0.0)
    return (a - (wc - 0.5) / beta) ** 2 + (b - (wr - 0.5) / beta) ** 2


def kto(a: torch.Tensor, b: torch.Tensor, beta: float, labels: Labels) -> torch.Tensor:
    if labels.kl is None:
        raise ValueError("the kto loss needs the batch's KL estimate (Labels.kl)")
    import torch

    z0 = labels.kl.to(a.dtype)
    desirable = 1 - torch.sigmoid(beta * (a - z0))
    undesirable = 1 - torch.sigmoid(beta * (z0 - b))
    return (labels.desirable_weight * desirable + labels.undesirable_weight * undesirable) / 2


def kl_estimate(policy_kl: torch.Tensor, reference_kl: torch.Tensor, reduce=None) -> torch.Tensor:
    """KTO's reference point as TRL computes it: the mean of log pi - log pi_ref over the batch's
    mismatched sequences, detached, averaged over processes by `reduce` (a mean across them, or
    None for one process), clamped at 0.

    >>> import torch
    >>> kl_estimate(torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -5.0])).item()
    0.5
    >>> kl_estimate(torch.tensor([-6.0]), torch.tensor([-4.0])).item()
    0.0
    """
    kl = (policy_kl - reference_kl).mean().detach()
    if reduce is not None:
        kl = reduce(kl)
    return kl.clamp(min=0)


def _known(w: torch.Tensor | None, like: torch.Tensor, default: float) -> torch.Tensor:
    import torch

    if w is None:
        return torch.full_like(like, default)
    w = w.to(like.dtype)
    return torch.where(torch.isnan(w), torch.full_like(w, default), w)


LossFn = Callable[["torch.Tensor", "torch.Tensor", float, Labels], "torch.Tensor"]


@dataclass(frozen=True)
class Loss:
    fn: LossFn
    help: str  # one line of `dno train --loss`'s help
    needs_kl: bool = False  # the loss reads Labels.kl: training scores mismatched sequences for it


LOSSES: dict[str, Loss] = {
    "hard": Loss(hard, "DNO-Prct, -log sigmoid(beta (a - b))"),
    "dpo": Loss(hard, "the same formula, named for a fixed --reference (offline DPO)"),
    "soft": Loss(soft, "Algorithm 1's soft target sigmoid(r(y+) - r(y-))"),
    "ipo": Loss(ipo, "IPO as TRL computes it, (a/n+ - b/n- - 1/(2 beta))^2 over per-token mean log-ratios"),
    "ipo-sum": Loss(ipo_sum, "(a - b - 1/(2 beta))^2 over summed log-probs (not length-normalised)"),
    "sppo": Loss(sppo, "SPPO's squared loss on the samples' win-rates"),
    "kto": Loss(kto, "KTO (TRL's KTOTrainer): chosen = desirable, rejected = undesirable, against the batch's "
                     "KL estimate; --desirable-weight, --undesirable-weight", needs_kl=True),
}


def loss_help() -> str:
    return "; ".join(f"{name}: {loss.help}" for name, loss in LOSSES.items())


def dno_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    target: torch.Tensor | None = None,
    *,
    loss: str | None = None,
    labels: Labels | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean loss over the batch, and per-pair implicit rewards beta * log(pi / pi_ref).

    `loss` names an entry of LOSSES; without it, `target` given means soft, else hard.
    """
    name = loss or ("soft" if target is not None else "hard")
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    if labels is None:
        labels = Labels(target=target)
    elif target is not None:
        labels = dataclasses.replace(labels, target=target)
    a = policy_chosen - ref_chosen
    b = policy_rejected - ref_rejected
    losses = LOSSES[name].fn(a, b, beta, labels)
    return losses.mean(), {"chosen_reward": (beta * a).detach(), "rejected_reward": (beta * b).detach()}


def reward_accuracy(margin: torch.Tensor) -> torch.Tensor:
    """Share of pairs whose chosen reward beats the rejected one; a tie counts one half."""
    return (margin > 0).float().mean() + 0.5 * (margin == 0).float().mean()


ROW_BY_ROW_BYTES = 64 * 2**20  # above this size of float32 logits, logsumexp runs row by row


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Sum of log p(token) over the positions where loss_mask is 1 (the response tokens).

    logits[:, i] predicts input_ids[:, i + 1], so the mask is read from position 1 on.
    log p(token) = logit(token) - logsumexp(logits): the label's logit is gathered and the
    normaliser subtracted, with no full log-softmax over the vocabulary; large logits are
    normalised one row at a time, so no batch-wide float32 temporary is made.
    """
    import torch

    labels = input_ids[:, 1:]
    mask = loss_mask[:, 1:]
    shifted = logits[:, :-1]
    token_logit = torch.gather(shifted, 2, labels.unsqueeze(-1)).squeeze(-1).float()
    if shifted.numel() * 4 <= ROW_BY_ROW_BYTES:
        lse = torch.logsumexp(shifted.float(), dim=-1)
    else:  # large logits: one row at a time keeps the float32 temporaries small
        lse = torch.stack([torch.logsumexp(row.float(), dim=-1) for row in shifted])
    token_logp = token_logit - lse
    return torch.where(mask.bool(), token_logp, torch.zeros_like(token_logp)).sum(-1)
