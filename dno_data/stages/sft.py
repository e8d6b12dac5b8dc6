"""`dno sft SOURCE --model DIR -o CHECKPOINT`: supervised fine-tuning, the baseline DNO is compared with.

    dno sft runs/r1/iter-01/samples.parquet --source teacher --model models/sft -o runs/r1/sft-01   # the teacher's answers
    dno sft runs/r1/iter-01/samples.parquet --source best --judgments runs/r1/iter-01/judgments.parquet \
        --min-score 5 --model models/sft -o runs/r1/rft-01             # rejection sampling: each prompt's best sample
    dno sft runs/r1/iter-01/pairs.parquet --model models/sft -o runs/r1/chosen-01   # a pairs file's chosen side
    dno sft ... --max-steps 200       # as many optimizer steps as another run (the examples are cycled)

Token NLL on the response only (prompt masked; EOS only after a response that ended by itself).
The checkpoint is a folder like `dno train`'s (HF files + dno-manifest.json), so `dno eval` and
`dno sql` take it as any other. The training options are `dno train`'s (stages/training_options.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Config, finite, group, in_range, one_of, opt
from ..config.groups import REVISION
from ..errors import DnoError
from ..training.options import CONTRASTIVE_ONLY, SFT_HELP, TrainOptions
from .common import CHECKPOINT, FORCE

SOURCES = ("teacher", "best", "chosen")


@dataclass(frozen=True, kw_only=True)
class SftConfig(Config):
    """Supervised fine-tuning on teacher answers, best samples or chosen responses."""

    data: Path = opt("samples.parquet (--source teacher|best), or pairs.parquet or TRL-format preference data "
                     "(Parquet, JSONL, a save_to_disk folder; its chosen side).", argument=True)
    model: Path = opt("HF folder (or Hugging Face Hub id) of the model to fine-tune.")
    revision: str | None = REVISION.field(None)
    output: Path = CHECKPOINT.field()
    source: str | None = opt("teacher: the teacher rows of a samples file | best: each prompt's best judged policy "
                             "sample (needs --judgments) | chosen: a pairs file's chosen side (the default for a pairs "
                             "file).", None, check=one_of(*SOURCES))
    judgments: Path | None = opt("--source best: judgments.parquet of the samples.", None)
    min_score: float | None = opt("--source best: the least score of a chosen sample (default: any).", None,
                                  check=finite)
    max_repetition: float = opt("--source best: repeated word 3-gram fraction above which a sample is never chosen.",
                                0.5, check=in_range(0, 1))
    # the training options of dno train, without the contrastive ones (beta, loss, reference)
    training: TrainOptions = group(TrainOptions, exclude=CONTRASTIVE_ONLY, help=SFT_HELP)
    force: bool = FORCE.field(False)

    def validate(self) -> None:
        if self.source == "best" and self.judgments is None:
            raise DnoError("--source best needs --judgments JUDGMENTS (the judgments of the samples file, `dno judge`)")
        if self.source != "best" and (self.judgments is not None or self.min_score is not None):
            # without --source, a samples file means teacher and a pairs file chosen: never best
            given = "" if self.source is None else f", not --source {self.source}"
            raise DnoError(f"--judgments and --min-score are for --source best{given}")


def _schema_of(path: Path) -> str | None:
    import pyarrow.parquet as pq

    try:
        return (pq.read_schema(path).metadata or {}).get(b"dno.schema", b"").decode() or None
    except Exception:  # unreadable: read_artifact below says so in one line
        return None


def run(cfg: SftConfig) -> Path:
    """Write the checkpoint folder cfg.output and return its path."""
    from ..artifacts import read_artifact
    from ..console import summary, up_to_date
    from ..lineage import make_lineage
    from ..models import check_model_dir
    from ..paths import check_input, check_output
    from ..training.options import records_of
    from ..parts import release_output
    from ..preference_import import looks_like_preferences, read_pairs
    from ..reproducibility import configure_torch
    from ..training.sft import select_examples, sft

    if not Path(cfg.data).exists():
        raise DnoError(f"{cfg.data}: no such file; pass a samples.parquet (`dno sample`), pairs.parquet (`dno pairs`) "
                       "or TRL-format preference data (its chosen side)")
    check_input(cfg.data, "data")  # a named pipe or a device: refused before anything opens it
    kind = _schema_of(cfg.data) if Path(cfg.data).is_file() else None
    outside = kind is None and looks_like_preferences(cfg.data)  # TRL-format preference data: its chosen side
    source = cfg.source or ("chosen" if kind == "pairs" or outside else "teacher")
    if source == "chosen":
        data = read_pairs(cfg.data)
    else:
        data = read_artifact(cfg.data, "samples")
    judgments = read_artifact(cfg.judgments, "judgments") if source == "best" else None
    model = check_model_dir(cfg.model, revision=cfg.revision)  # a Hub id: its snapshot folder (dno_data.hub)
    if cfg.output.resolve() == model.resolve():
        raise DnoError(f"{cfg.output}: the checkpoint would overwrite the input model; choose another -o")
    inputs = [cfg.data, model] + ([cfg.judgments] if judgments is not None else [])
    check_output(cfg.output, inputs, kind="sft")
    check_output(records_of(cfg.output), inputs, kind="train-records")  # its training records, beside it
    configure_torch(cfg.training.threads)  # before the lineage, which records it
    lineage = make_lineage("sft", inputs, cfg)
    if up_to_date(cfg.output, lineage, cfg.force):
        return cfg.output
    examples = select_examples(source, samples=None if source == "chosen" else data, judgments=judgments,
                               pairs=data if source == "chosen" else None, min_score=cfg.min_score,
                               max_repetition=cfg.max_repetition)
    if len(examples) == 0:
        why = {"teacher": "it has no teacher rows (sample with --teacher)",
               "best": "no policy sample is judged, finished (not truncated) and at least --min-score",
               "chosen": "the pairs file has no rows"}[source]
        raise DnoError(f"{cfg.data}: nothing to fine-tune on with --source {source}: {why}")
    metrics = sft(examples, model, cfg.output, cfg.training, lineage, fresh=cfg.force)
    release_output(cfg.output)
    if metrics is not None:  # the main process reports
        summary(f"sft ({source}) {cfg.model} -> {cfg.output}", metrics)
    return cfg.output

