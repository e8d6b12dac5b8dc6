"""`dno merge SHARD... -o samples.parquet`: the shards of a `dno sample --shard i/n` run as one file.

    dno sample runs/r1/prompts.parquet -o runs/r1/iter-01/shard-0.parquet --model DIR --partition 1 --shard 0/2
    dno sample runs/r1/prompts.parquet -o runs/r1/iter-01/shard-1.parquet --model DIR --partition 1 --shard 1/2
    dno merge runs/r1/iter-01/shard-*.parquet -o runs/r1/iter-01/samples.parquet

Refuses (naming the prompt ids and files) when a prompt of the selection recorded in the shards'
lineage (partition / split of their prompts file) is missing or in more than one shard. The
merged rows and their order equal an unsharded run's; its lineage is that run's (plus
`merged_from`), so `dno sample` without --shard counts it as up to date.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Config, as_tuple, opt
from .common import OUTPUT_FILE


@dataclass(frozen=True, kw_only=True)
class MergeConfig(Config):
    """Merge the shards of a sharded `dno sample` run; refuses missing or doubled prompts."""

    shards: tuple[Path, ...] = opt("The shard files of one `dno sample --shard i/n` run.", argument=True,
                                   normalize=as_tuple)
    output: Path = OUTPUT_FILE.field(help="samples.parquet to write.")
    # the shards' prompts file, when it moved (checked by content hash)
    prompts: Path | None = opt("The shards' prompts file, if it moved.", None)


def run(cfg: MergeConfig) -> Path:
    from ..artifacts import write_artifact
    from ..console import summary
    from ..paths import check_output
    from ..sharding import merge_shards

    check_output(cfg.output, list(cfg.shards), kind="samples")
    table, lineage = merge_shards(list(cfg.shards), cfg.prompts)
    write_artifact(table, cfg.output, "samples", lineage)
    summary(f"merged {len(cfg.shards)} shard(s) -> {cfg.output}",
            {"prompts": len(set(table["prompt_id"].to_pylist())), "rows": table.num_rows})
    return cfg.output

