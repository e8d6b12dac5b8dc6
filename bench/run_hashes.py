"""Where do two runs of one command diverge? Content hashes of every artifact, per iteration and stage.

    python bench/run_hashes.py /tmp/r1 /tmp/r2 [/tmp/r3 ...]

For each artifact of a run folder (prompts, policy-0, and per iteration samples, judgments,
pairs, checkpoint weights, reference log-probs, eval) it hashes what the artifact holds, not
where it was written: Parquet rows are hashed on their content columns (sorted), leaving out
the columns that name a path (generator, model) or hash one (sample ids), and a checkpoint on
its weights file. It prints one row per artifact with a short hash per run, marks the rows that
differ, and names the first one: the stage whose output differs first is where to look.
It also prints each run's held-out accuracy per iteration (from report.json, when there is one).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

# Columns that hold what a stage computed; the others name or hash a path of the run folder.
CONTENT = {
    "prompts.parquet": ("prompt_id", "messages", "reference", "split", "partition"),
    "samples.parquet": ("prompt_id", "source", "sample_index", "response", "num_tokens", "finish_reason"),
    "judgments.parquet": ("prompt_id", "score", "correct", "status"),
    "pairs.parquet": ("prompt_id", "chosen", "rejected", "chosen_source", "rejected_source", "chosen_score",
                      "rejected_score", "pair_type", "target"),
    "eval.parquet": ("prompt_id", "response", "teacher_response", "policy_score", "teacher_score", "win", "correct"),
    "ref_logps.parquet": ("ref_chosen", "ref_rejected"),  # keyed by pair_id, which hashes sample ids
}


def table_hash(path: Path, columns) -> str:
    table = pq.read_table(path)
    names = [c for c in (columns or table.column_names) if c in table.column_names]
    rows = sorted(json.dumps([r[c] for c in names], sort_keys=True, default=str) for r in table.select(names).to_pylist())
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def weights_hash(folder: Path) -> str | None:
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def artifacts(run: Path) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    if (run / "prompts.parquet").exists():
        out["prompts"] = table_hash(run / "prompts.parquet", CONTENT["prompts.parquet"])
    if (run / "policy-0").exists():
        out["policy-0 weights"] = weights_hash(run / "policy-0")
    for it in sorted(run.glob("iter-[0-9][0-9]")):
        for name in ("samples.parquet", "judgments.parquet", "pairs.parquet"):
            if (it / name).exists():
                out[f"{it.name} {name.split('.')[0]}"] = table_hash(it / name, CONTENT[name])
        ckpt = it / "checkpoint"
        if ckpt.exists():
            ref = next((f for f in (it / "checkpoint.records" / "ref_logps.parquet", ckpt / "ref_logps.parquet")
                        if f.exists()), None)  # the records folder; inside the checkpoint for an older dno's runs
            if ref is not None:
                out[f"{it.name} reference log-probs"] = table_hash(ref, CONTENT["ref_logps.parquet"])
            out[f"{it.name} checkpoint weights"] = weights_hash(ckpt)
        if (it / "eval.parquet").exists():
            out[f"{it.name} eval"] = table_hash(it / "eval.parquet", CONTENT["eval.parquet"])
    return out


def main(argv: list[str]) -> int:
    runs = [Path(a) for a in argv]
    if len(runs) < 2:
        print(__doc__.strip().splitlines()[2].strip())
        return 2
    hashes = [artifacts(r) for r in runs]
    keys = list(dict.fromkeys(k for h in hashes for k in h))
    first = None
    print(f"{'artifact':32} " + " ".join(f"{r.name[:12]:12}" for r in runs))
    for k in keys:
        values = [h.get(k) for h in hashes]
        same = len(set(values)) == 1
        if not same and first is None:
            first = k
        print(f"{k:32} " + " ".join(f"{(v or '-')[:12]:12}" for v in values) + ("" if same else "   DIFFERS"))
    print(f"\nfirst difference: {first}" if first else "\nevery artifact is identical")
    for r in runs:
        report = r / "report.json"
        if report.exists():
            data = json.loads(report.read_text())
            accs = " -> ".join(f"{x['accuracy_pct']:.1f}" for x in data["iterations"])
            print(f"{r}: held-out accuracy % {accs} ({data['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
