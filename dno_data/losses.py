"""The DNO-Prct contrastive loss, a pure function of sequence log-probs.

With h = (log pi(y+) - log pi_t(y+)) - (log pi(y-) - log pi_t(y-)), the reference pi_t
being the policy that sampled the pairs:

  hard (DNO-Prct):   loss = -log sigmoid(beta * h)
  soft (Algorithm 1):loss = -[t log sigmoid(beta h) + (1 - t) log sigmoid(-beta h)],
                     t = sigmoid(r(y+) - r(y-)) from the pairs' win-rates.

Worked example (used in tests): beta = 0.1, policy log-probs (-10, -14), reference
(-11, -13): h = (-10 + 11) - (-14 + 13) = 2, beta*h = 0.2,
hard loss = -log sigmoid(0.2) = log(1 + e^-0.2) = 0.598139;
soft with t = 0.75: 0.75 * 0.598139 + 0.25 * log(1 + e^0.2) = 0.448604 + 0.199533 = 0.648139.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dno_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    target: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean loss over the batch, and per-pair implicit rewards beta * log(pi / pi_t)."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    logits = chosen_reward - rejected_reward
    if target is None:
        losses = -F.logsigmoid(logits)
    else:
        losses = -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits))
    return losses.mean(), {"chosen_reward": chosen_reward.detach(), "rejected_reward": rejected_reward.detach()}


def sequence_logps(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Sum of log p(token) over the positions where loss_mask is 1 (the response tokens).

    logits[:, i] predicts input_ids[:, i + 1], so the mask is read from position 1 on.
    """
    labels = input_ids[:, 1:]
    mask = loss_mask[:, 1:].to(logits.dtype)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logp = torch.gather(logp, 2, labels.unsqueeze(-1)).squeeze(-1)
    return (token_logp * mask).sum(-1)
