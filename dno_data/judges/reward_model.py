"""A local reward model as the judge: transformers sequence classification, batched.

Each candidate gets r = the model's scalar output on (conversation + response), written as
a kind=score row; every pair of candidates of a prompt also gets a kind=pair row with
P(a > b) = sigmoid(r_a - r_b) (the Bradley-Terry reading of a reward model), which is what
`dno pairs` uses for win-rates. The scale of r is the model's own: use `--rule best-worst`
(the paper rule's 5/6 thresholds are for the 6-point rubric).
"""

from __future__ import annotations

import math
from itertools import combinations

from ..errors import DnoError
from ..ids import stable_hash
from ..models import check_model_dir, load_tokenizer
from .base import Group, SyncJudge


class RewardModelJudge(SyncJudge):
    kind = "score"

    def __init__(self, spec: str, batch_size: int = 16, max_length: int = 2048):
        import torch
        from transformers import AutoModelForSequenceClassification

        # a local folder, or a Hugging Face Hub id (org/name[@REVISION]): its snapshot folder (dno_data.hub)
        path = check_model_dir(spec.removeprefix("reward:"), flag="--judge reward:PATH")
        self.spec, self.batch_size, self.max_length = spec, batch_size, max_length
        self.tokenizer = load_tokenizer(path, padding_side="right")
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
        except (OSError, ValueError) as e:
            raise DnoError(f"{path}: cannot load a sequence-classification reward model ({str(e).splitlines()[0]})") from None
        if self.model.config.num_labels != 1:
            raise DnoError(f"{path}: a reward model has num_labels=1, this one has {self.model.config.num_labels}")
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        from ..hub import hub_info
        from ..lineage import describe_inputs

        self.judge_id = stable_hash("judge", "reward", describe_inputs([path])[0]["sha256"], max_length)
        self.hub = hub_info(path)  # a Hub id's repository and resolved commit, for the lineage (None: a folder)

    def _text(self, messages: list[dict], response: str) -> str:
        convo = messages + [{"role": "assistant", "content": response}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(convo, tokenize=False)
        return "\n".join(f"{m['role']}: {m['content']}" for m in convo)

    def rewards(self, texts: list[str]) -> list[float]:
        import torch

        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt", add_special_tokens=False).to(self.device)
            with torch.no_grad():
                out += self.model(**enc).logits[:, 0].float().tolist()
        return out

    def judge(self, group: Group) -> list[dict]:
        return self.judge_batch([group])

    def judge_batch(self, groups: list[Group]) -> list[dict]:
        texts = [self._text(g.messages, c.response) for g in groups for c in g.candidates]
        rewards = iter(self.rewards(texts))
        rows = []
        for g in groups:
            r = {c.sample_id: next(rewards) for c in g.candidates}
            rows += [self.make_row(g, c.sample_id, None, i, score=r[c.sample_id]) for i, c in enumerate(g.candidates)]
            for a, b in combinations(g.candidates, 2):
                p = 1.0 / (1.0 + math.exp(-(r[a.sample_id] - r[b.sample_id])))
                rows.append(self.make_row(g, a.sample_id, b.sample_id, 0, prob_a_wins=p))
        return rows


def reward_judge(spec: str, mode: str | None, both_orders: bool = True, **options) -> RewardModelJudge:
    """`reward:PATH`; options: batch_size, max_length."""
    if mode not in (None, "score"):
        raise DnoError(f"--judge {spec}: a reward model scores answers; drop --mode")
    keys = ("batch_size", "max_length")
    return RewardModelJudge(spec, **{k: v for k, v in options.items() if k in keys and v is not None})

