"""`dno export PAIRS --format trl|hf-dataset -o OUT`: pairs in the preference format TRL reads directly.

    dno export runs/r1/iter-01/pairs.parquet -o dpo.parquet                    # TRL, conversational
    dno export runs/r1/iter-01/pairs.parquet -o dpo.jsonl --string             # prompt as rendered text
    dno export runs/r1/iter-01/pairs.parquet --format hf-dataset -o dpo-dataset

`prompt` / `chosen` / `rejected` (+ `pair_id`): message lists by default (TRL applies the chat
template), or strings with --string. `trl` writes a .parquet or .jsonl file, `hf-dataset` a
`datasets.Dataset.save_to_disk` folder (`datasets.load_from_disk(OUT)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Config, Option, one_of, opt, output_folder
from ..errors import DnoError
from ..export import FORMATS
from .common import FORCE


@dataclass(frozen=True, kw_only=True)
class ExportConfig(Config):
    """Write pairs.parquet as TRL / HF datasets preference data (prompt, chosen, rejected)."""

    pairs: Path = opt("pairs.parquet (from `dno pairs`).", argument=True)
    output: Path = Option("File (.parquet / .jsonl) or, with --format hf-dataset, folder to write.",
                          flags=("-o", "--output"), changes_output=False).field()
    format: str = opt(f"{' | '.join(FORMATS)}: a Parquet/JSONL file for TRL's DPOTrainer, or a "
                      "datasets.save_to_disk folder.", "trl", check=one_of(*FORMATS))
    string: bool = opt("prompt / chosen / rejected as text (prompt: the rendered prompt the policy sampled "
                       "from) instead of message lists.", False)
    tokenizer: Path | None = opt("With --string: render the prompt with this tokenizer's chat template.", None)
    force: bool = FORCE.field(False, help="Replace an earlier export at -o (never another kind of file).")


def run(cfg: ExportConfig) -> Path:
    from ..console import summary
    from ..export import check_export_output, export_pairs
    from ..lineage import make_lineage

    if cfg.tokenizer is not None and not cfg.string:
        raise DnoError("--tokenizer renders the prompt as text: pass it with --string (the message lists "
                       "are rendered by the trainer)")
    if cfg.format == "hf-dataset":
        try:
            output_folder(cfg.output)
        except ValueError as e:
            raise DnoError(f"{cfg.output}: {e}; choose another -o") from None
    check_export_output(cfg.output, cfg.pairs, cfg.format, cfg.force)
    lineage = make_lineage("export", [cfg.pairs], cfg)
    n = export_pairs(cfg.pairs, cfg.output, cfg.format, cfg.string, cfg.tokenizer, lineage, force=cfg.force)
    summary(f"exported -> {cfg.output}", {"pairs": n, "format": cfg.format,
                                          "form": "strings" if cfg.string else "conversational"})
    return cfg.output

