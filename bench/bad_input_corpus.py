"""A wide corpus of bad inputs across every command, each run as a user would, sorted by how it ended.

    python bench/bad_input_corpus.py                 # every case, 2 at a time (about 10 minutes on 2 cores)
    python bench/bad_input_corpus.py --only pairs    # the cases of one command
    python bench/bad_input_corpus.py --list          # the cases, not run

Each case copies a small workspace (a tiny model, one valid artifact of each kind, a run folder), changes
one thing (a broken input, a bad value, a wrong -o, a named pipe...), runs `python -m stages.cli ...` in it
with a time limit, and sorts the outcome:
  clean       exit 1, exactly one `error:` line on stderr, no traceback, the workspace as it was
  traceback   a Python traceback on stderr
  not-1-line  refused, but not as one `error:` line (a usage box, several lines)
  exit-0      the bad input was accepted
  leftovers   refused cleanly, but a new path appeared or a file changed
  secret      a secret given in a URL reached a file or the terminal
  hang        still running at the time limit (killed)
It prints the counts per outcome, per command and per class of the issue it belongs to (2 wrong content,
3 failure paths, 4 leftovers, 5 special files, 6 secrets, 7 messages; 1 a wrong -o), then every case that
was not clean. Before the cases, each command's valid form runs once in the same workspace (it must exit 0),
so each case fails for the one thing it changes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

SECRET = "SEKRETVALUE42"
M = "model"
P, S, J, PAIRS = "prompts.parquet", "samples.parquet", "judgments.parquet", "pairs.parquet"

GOOD = {  # each command's valid form in the workspace
    "prompts": ["prompts", "src.jsonl", "-o", "out.parquet"],
    "sample": ["sample", P, "-o", "out.parquet", "--model", M, "--split", "all", "-k", "1", "--max-new-tokens", "2"],
    "judge": ["judge", S, "-o", "out.parquet", "--judge", "oracle:addition"],
    "pairs": ["pairs", J, S, "-o", "out.parquet"],
    "train": ["train", PAIRS, "--model", M, "-o", "out", "--batch-size", "1", "--max-length", "16"],
    "sft": ["sft", PAIRS, "--model", M, "-o", "out", "--batch-size", "1", "--max-length", "16"],
    "eval": ["eval", P, "--model", M, "--judge", "oracle:addition", "-o", "out.parquet", "--max-new-tokens", "2"],
    "export": ["export", PAIRS, "-o", "out.jsonl"],
    "report": ["report", "run", "-o", "out.html"],
    "sql": ["sql", "--run", "run", "SELECT count(*) AS n FROM samples", "--format", "csv", "-o", "out.csv"],
    "merge": ["merge", "shard-0.parquet", "shard-1.parquet", "-o", "out.parquet"],
    "iterate": ["iterate", "--run", "run", "--model", M, "--judge", "oracle:addition", "--iterations", "1", "--dry-run"],
    "compare": ["compare", "--run", "run", "--model", M, "--judge", "oracle:addition", "--iterations", "1",
                "--dry-run"],
}
INPUT = {  # command -> (index in GOOD of its main artifact input, the schema it must be)
    "sample": (1, "prompts"), "judge": (1, "samples"), "pairs": (1, "judgments"), "train": (1, "pairs"),
    "sft": (1, "pairs"), "eval": (1, "prompts"), "export": (1, "pairs"), "merge": (1, "samples"),
}
SECOND_INPUT = {"pairs": (2, "samples")}
OUTPUT_AT = {c: g.index("-o") + 1 for c, g in GOOD.items() if "-o" in g}
NUMERIC = {  # command -> options whose value must be a positive integer / a number in range
    "prompts": ["--partitions", "--eval-size", "--seed"],
    "sample": ["-k", "--max-new-tokens", "--batch-size", "--seed", "--temperature", "--top-p", "--threads"],
    "judge": ["--concurrency", "--rpm", "--timeout", "--max-retries", "--max-failure-rate", "--prompts-per-part"],
    "pairs": ["--max-negatives", "--replay-fraction", "--max-pairs", "--max-repetition", "--seed"],
    "train": ["--beta", "--batch-size", "--grad-accum", "--learning-rate", "--max-steps", "--max-length",
              "--warmup-ratio", "--epochs", "--save-every", "--lora-r"],
    "sft": ["--batch-size", "--learning-rate", "--max-steps", "--max-length", "--epochs", "--min-score"],
    "eval": ["--max-new-tokens", "--batch-size", "--temperature", "--top-p", "--timeout"],
    "report": ["--resamples"],
    "iterate": ["--iterations", "--start"],
    "compare": ["--iterations", "--resamples"],
}
BAD_NUMBERS = ["-1", "nan", "1.5x", "1e400", "99999999999999999999999"]


# ---------------------------------------------------------------- the workspace

def build_template(folder: Path) -> None:
    from conftest import pairs_row, prompt_row, sample_row, score_row, write_example
    from dno_data.tasks import addition

    folder.mkdir(parents=True, exist_ok=True)
    tok = addition.build_tokenizer()
    addition.build_model(tok, hidden=32, layers=1, heads=2, seed=0).save_pretrained(folder / M)
    tok.save_pretrained(folder / M)
    write_example(folder / P, "prompts", [prompt_row("p1", content="12+34", reference="46"),
                                          prompt_row("p2", partition=None, split="eval", content="1+2", reference="3")])
    write_example(folder / S, "samples", [sample_row("s1", "p1", "46", reference="46"),
                                          sample_row("s2", "p1", "1", index=1, reference="46")])
    write_example(folder / J, "judgments", [score_row("s1", "p1", 6.0), score_row("s2", "p1", 1.0)])
    write_example(folder / PAIRS, "pairs", [pairs_row("p1", "s1", "s2", "46", "1", prompt_text="12+34=")])
    (folder / "src.jsonl").write_text('{"prompt": "1+2", "reference": "3"}\n{"prompt": "2+2", "reference": "4"}\n')
    run = folder / "run"
    (run / "iter-01").mkdir(parents=True)
    shutil.copy(folder / P, run / P)
    for f in (S, J, PAIRS):
        shutil.copy(folder / f, run / "iter-01" / f)
    env = _env()
    for i in range(2):  # two shards of one sharded sample run, for `dno merge`
        proc = subprocess.run([sys.executable, "-m", "stages.cli", *GOOD["sample"][:3], f"shard-{i}.parquet",
                               *GOOD["sample"][4:], "--shard", f"{i}/2"], cwd=folder, env=env, capture_output=True,
                              text=True)
        if proc.returncode:
            raise SystemExit(f"building the shards failed: {proc.stderr}")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("OPENAI_API_KEY", None)
    env["DNO_CACHE"] = "cache/judge.sqlite"
    return env


# ---------------------------------------------------------------- setups: each changes one thing

def _loose(path: Path, schema_name: str, mutate) -> None:
    """Rewrite an artifact as another tool would (every column nullable), its rows changed by `mutate`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import schemas

    spec = schemas.get(schema_name)
    rows = pq.read_table(path).to_pylist()
    rows = mutate(rows)
    loose = pa.schema([f.with_nullable(True) for f in spec.schema])
    table = pa.Table.from_pylist(rows, schema=loose).replace_schema_metadata(
        {b"dno.schema": spec.name.encode(), b"dno.schema_version": str(spec.version).encode()})
    pq.write_table(table, path)


def _meta(path: Path, **changes) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = {**(table.schema.metadata or {}), **{k.encode(): str(v).encode() for k, v in changes.items()}}
    pq.write_table(table.replace_schema_metadata(meta), path)


def _set(column, value, row=0):
    def mutate(rows):
        rows[row][column] = value
        return rows
    return mutate


def _dup(rows):
    return rows + [dict(rows[0])]


ARTIFACT_BREAKS = {  # name -> (how it breaks a file of `schema`), for any artifact input
    "missing": lambda ws, f, schema: (ws / f).unlink(),
    "folder": lambda ws, f, schema: ((ws / f).unlink(), (ws / f).mkdir()),
    "empty-file": lambda ws, f, schema: (ws / f).write_bytes(b""),
    "text-file": lambda ws, f, schema: (ws / f).write_text("not parquet\n"),
    "truncated": lambda ws, f, schema: (ws / f).write_bytes((ws / f).read_bytes()[:100]),
    "other-schema": lambda ws, f, schema: shutil.copy(ws / (J if schema != "judgments" else S), ws / f),
    "version-99": lambda ws, f, schema: _meta(ws / f, **{"dno.schema_version": 99}),
    "version-0": lambda ws, f, schema: _meta(ws / f, **{"dno.schema_version": 0}),
    "no-dno-metadata": lambda ws, f, schema: _meta(ws / f, **{"dno.schema": ""}),
    "duplicate-key": lambda ws, f, schema: _loose(ws / f, schema, _dup),
    "null-key": lambda ws, f, schema: _loose(ws / f, schema, _set(KEY[schema], None)),
    "named-pipe": lambda ws, f, schema: ((ws / f).unlink(), os.mkfifo(ws / f)),
    "symlink-to-dev-zero": lambda ws, f, schema: ((ws / f).unlink(), os.symlink("/dev/zero", ws / f)),
}
KEY = {"prompts": "prompt_id", "samples": "sample_id", "judgments": "judgment_id", "pairs": "pair_id"}
CONTENT_BREAKS = {  # schema -> name -> mutate (rows that a reader must refuse)
    "prompts": {"role-wizard": _set("messages", [{"role": "wizard", "content": "1+1"}]),
                "no-messages": _set("messages", []),
                "assistant-last": _set("messages", [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}]),
                "split-unknown": _set("split", "test"), "partition-0": _set("partition", 0)},
    "samples": {"source-unknown": _set("source", "oracle"), "index-negative": _set("sample_index", -1),
                "repetition-2": _set("repetition", 2.0), "repetition-nan": _set("repetition", float("nan"))},
    "judgments": {"score-nan": _set("score", float("nan")), "score-inf": _set("score", float("inf")),
                  "kind-unknown": _set("kind", "vibes"), "status-unknown": _set("status", "great"),
                  "prob-1.5": lambda rows: [{**r, "kind": "pair", "score": None, "prob_a_wins": 1.5,
                                             "sample_id_b": "s2"} for r in rows]},
    "pairs": {"target-5": _set("target", 5.0), "target-nan": _set("target", float("nan")),
              "chosen-is-rejected": _set("rejected_sample_id", "s1"),
              "margin-inf": _set("margin", float("inf"))},
}
OUTPUT_BREAKS = {  # -o that must be refused: (setup, the -o value)
    "parent-is-a-file": (lambda ws: (ws / "afile").write_text("x"), "afile/out"),
    "other-artifact": (lambda ws: None, S),
    "a-run-folder": (lambda ws: None, "run"),
    "the-model": (lambda ws: None, M),
    "judge-cache": (lambda ws: _sqlite(ws / "cache.sqlite"), "cache.sqlite"),
    "named-pipe": (lambda ws: os.mkfifo(ws / "fifo"), "fifo"),
    "dev-null": (lambda ws: None, "/dev/null"),
    "symlink": (lambda ws: os.symlink("src.jsonl", ws / "link"), "link"),
    "users-file": (lambda ws: (ws / "notes.txt").write_text("mine"), "notes.txt"),
}


def _sqlite(path: Path) -> None:
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()


# ---------------------------------------------------------------- the cases

class Case:
    def __init__(self, cls: int, command: str, name: str, args: list[str], setup=None, secret: bool = False):
        self.cls, self.command, self.name, self.args, self.setup, self.secret = cls, command, name, args, setup, secret


def _replace(args: list[str], i: int, value: str) -> list[str]:
    out = list(args)
    out[i] = value
    return out


def cases() -> list[Case]:
    out: list[Case] = []
    for command, (i, schema) in {**INPUT, **{f"{k}#2": v for k, v in SECOND_INPUT.items()}}.items():
        cmd = command.split("#")[0]
        good = GOOD[cmd]
        f = good[i]
        for name, brk in ARTIFACT_BREAKS.items():
            if name in ("duplicate-key", "null-key") and schema not in KEY:
                continue
            cls = 5 if name in ("named-pipe", "symlink-to-dev-zero") else 2
            out.append(Case(cls, cmd, f"input {f}: {name}", good, lambda ws, b=brk, f=f, s=schema: b(ws, f, s)))
        for name, mutate in CONTENT_BREAKS.get(schema, {}).items():
            out.append(Case(2, cmd, f"input {f}: {name}", good, lambda ws, m=mutate, f=f, s=schema: _loose(ws / f, s, m)))
    for cmd, at in OUTPUT_AT.items():
        for name, (setup, value) in OUTPUT_BREAKS.items():
            if name == "other-artifact" and cmd in ("sample", "merge"):
                value = J  # samples.parquet is their own kind, which they replace

            cls = 5 if name in ("named-pipe", "dev-null") else 3 if name == "parent-is-a-file" else 1
            out.append(Case(cls, cmd, f"-o {name}", _replace(GOOD[cmd], at, value), setup))
    for cmd, options in NUMERIC.items():
        for opt in options[:4]:
            for bad in BAD_NUMBERS[:3] if opt != "--seed" else BAD_NUMBERS[3:]:
                out.append(Case(7 if bad == "1.5x" else 3, cmd, f"{opt} {bad}", GOOD[cmd] + [opt, bad]))
    for cmd in GOOD:
        out.append(Case(7, cmd, "unknown option", GOOD[cmd] + ["--bogus-option"]))
        out.append(Case(7, cmd, "option without its value", GOOD[cmd] + ["--config"]))
        out.append(Case(7, cmd, "--config missing file", GOOD[cmd] + ["--config", "nope.toml"]))
        out.append(Case(7, cmd, "--config not TOML", GOOD[cmd] + ["--config", "bad.toml"],
                        lambda ws: (ws / "bad.toml").write_text("[sample\nk = ")))
        out.append(Case(7, cmd, "--config unknown key", GOOD[cmd] + ["--config", "bad.toml"],
                        lambda ws, c=cmd: (ws / "bad.toml").write_text(f"[{c}]\nno_such_option = 1\n")))
    # secrets in URLs: the command may succeed, but the secret must reach no file and no line
    for cmd in ("judge", "sample", "eval"):
        url = f"http://127.0.0.1:9/v1?api_key={SECRET}&model=m"
        out.append(Case(6, cmd, "--base-url with ?api_key=", GOOD[cmd] + ["--base-url", url], secret=True))
        out.append(Case(6, cmd, "--base-url with user:password@", GOOD[cmd] + ["--base-url",
                                                                                 f"http://u:{SECRET}@127.0.0.1:9/v1"],
                        secret=True))
    # one-off cases of the issue
    judge_api = ["judge", S, "-o", "out.parquet", "--judge", "openai:gpt-x", "--base-url", "https://api.example.invalid/v1"]
    out += [
        Case(4, "judge", "openai judge without its API key", judge_api + ["--cache", "c.sqlite"]),
        Case(3, "judge", "--prices of the wrong shape", judge_api + ["--dry-run", "--prices", "pr.json"],
             lambda ws: (ws / "pr.json").write_text('{"gpt-x": {"in": 1}}')),
        Case(3, "judge", "--prices a list", judge_api + ["--dry-run", "--prices", "pr.json"],
             lambda ws: (ws / "pr.json").write_text('[1, 2]')),
        Case(3, "judge", "--template beyond the sandbox", judge_api + ["--dry-run", "--template", "t.jinja"],
             lambda ws: (ws / "t.jinja").write_text("{{ range(10**7) }}{{ instruction }}{{ candidates }}")),
        Case(3, "judge", "--template unsafe attribute", judge_api + ["--dry-run", "--template", "t.jinja"],
             lambda ws: (ws / "t.jinja").write_text("{{ instruction.__class__.__mro__ }}{{ candidates }}")),
        Case(3, "judge", "--template unknown variable", judge_api + ["--dry-run", "--template", "t.jinja"],
             lambda ws: (ws / "t.jinja").write_text("{{ nope.x }}")),
        Case(3, "judge", "--cache under a file", judge_api + ["--dry-run", "--cache", "afile/c.sqlite"],
             lambda ws: (ws / "afile").write_text("x")),
        Case(2, "train", "input pairs.parquet: same-answer", GOOD["train"],
             lambda ws: _loose(ws / PAIRS, "pairs", _set("rejected", [{"role": "assistant", "content": "46"}]))),
        Case(4, "train", "--lora-target-modules nonexistent", GOOD["train"] + ["--lora-r", "2", "--lora-target-modules",
                                                                              "nonexistent"]),
        Case(7, "pairs", "--memory-limit 1KB", GOOD["pairs"] + ["--memory-limit", "1KB"]),
        Case(7, "pairs", "--memory-limit lots", GOOD["pairs"] + ["--memory-limit", "lots"]),
        Case(2, "prompts", "--text-column and --messages-column", ["prompts", "src.jsonl", "--text-column", "prompt",
                                                                  "--messages-column", "prompt", "-o", "out.parquet"]),
        Case(2, "prompts", "number as a prompt", ["prompts", "n.jsonl", "-o", "out.parquet"],
             lambda ws: (ws / "n.jsonl").write_text('{"prompt": 5}\n')),
        Case(2, "prompts", "assistant-only messages", ["prompts", "a.jsonl", "-o", "out.parquet"],
             lambda ws: (ws / "a.jsonl").write_text('{"messages": [{"role": "assistant", "content": "x"}]}\n')),
        Case(2, "prompts", "bare string in --messages-column", ["prompts", "b.jsonl", "--messages-column", "messages",
                                                                "-o", "out.parquet"],
             lambda ws: (ws / "b.jsonl").write_text('{"messages": "1+2"}\n')),
        Case(2, "prompts", "role wizard", ["prompts", "w.jsonl", "-o", "out.parquet"],
             lambda ws: (ws / "w.jsonl").write_text('{"messages": [{"role": "wizard", "content": "x"}]}\n')),
        Case(2, "prompts", "empty source", ["prompts", "e.jsonl", "-o", "out.parquet"],
             lambda ws: (ws / "e.jsonl").write_text("")),
        Case(2, "prompts", "broken JSON", ["prompts", "x.jsonl", "-o", "out.parquet"],
             lambda ws: (ws / "x.jsonl").write_text('{"prompt": "1+2"\n')),
        Case(3, "sample", "--max-new-tokens beyond the context", GOOD["sample"][:-1] + ["100000"], _gpt2_setup),
        Case(3, "sql", "a conversion error", ["sql", "--run", "run", "SELECT CAST(prompt_id AS INTEGER) FROM samples"]),
        Case(3, "sql", "a missing view", ["sql", "--run", "run", "SELECT * FROM nope"]),
        Case(3, "sql", "COPY TO", ["sql", "--run", "run", "COPY (SELECT 1) TO 'x.csv'"]),
        Case(3, "sql", "read_text", ["sql", "--run", "run", "SELECT * FROM read_text('/etc/passwd')"]),
        Case(3, "sql", "--format parquet without -o", ["sql", "--run", "run", "SELECT 1", "--format", "parquet"]),
        Case(3, "sql", "no such run", ["sql", "--run", "nope", "SELECT 1"]),
        Case(3, "sql", "--param without =", ["sql", "--run", "run", "SELECT $x", "--param", "x"]),
        Case(3, "report", "no such run", ["report", "nope", "-o", "out.html"]),
        Case(3, "report", "a run without artifacts", ["report", "empty", "-o", "out.html"],
             lambda ws: (ws / "empty").mkdir()),
        Case(3, "export", "--format unknown", GOOD["export"] + ["--format", "csv"]),
        Case(3, "export", "--string with a missing tokenizer", GOOD["export"] + ["--string", "--tokenizer", "nope"]),
        Case(3, "merge", "one shard missing", ["merge", "shard-0.parquet", "-o", "out.parquet"]),
        Case(3, "merge", "a shard twice", ["merge", "shard-0.parquet", "shard-0.parquet", "-o", "out.parquet"]),
        Case(3, "iterate", "--start after --iterations", GOOD["iterate"] + ["--start", "3"]),
        Case(3, "iterate", "--train-args typo", GOOD["iterate"] + ["--train-args", "--betta 0.1"]),
        Case(3, "iterate", "--train-args sets -o", GOOD["iterate"] + ["--train-args", "-o x"]),
        Case(3, "iterate", "no such run", _replace(GOOD["iterate"], 2, "nope")[:-1]),  # a dry run only prints
        Case(3, "compare", "--methods unknown", GOOD["compare"] + ["--methods", "dno,magic"]),
        Case(3, "compare", "no such model", _replace(GOOD["compare"], 4, "nope")[:-1]),
        Case(3, "train", "--loss unknown", GOOD["train"] + ["--loss", "magic"]),
        Case(3, "train", "--reference missing", GOOD["train"] + ["--reference", "nope"]),
        Case(3, "train", "--epochs 2", GOOD["train"] + ["--epochs", "2"]),
        Case(3, "train", "--loss kto with --batch-size 1", GOOD["train"] + ["--loss", "kto"]),
        Case(3, "sft", "--source unknown", GOOD["sft"] + ["--source", "magic"]),
        Case(3, "sft", "--source best without --judgments", _replace(GOOD["sft"], 1, S) + ["--source", "best"]),
        Case(3, "eval", "--judge unknown", _replace(GOOD["eval"], 5, "nonsense")),
        Case(3, "sample", "--backend unknown", GOOD["sample"] + ["--backend", "tgi"]),
        Case(3, "sample", "--teacher unknown", GOOD["sample"] + ["--teacher", "magic:x"]),
        Case(3, "sample", "--shard 3/2", GOOD["sample"] + ["--shard", "3/2"]),
        Case(3, "judge", "--mode unknown", GOOD["judge"] + ["--mode", "vibes"]),
        Case(3, "judge", "--judge python: missing module", _replace(GOOD["judge"], 5, "python:nope_mod:f")),
        Case(3, "pairs", "--rule unknown", GOOD["pairs"] + ["--rule", "best"]),
        Case(3, "pairs", "--sql missing", GOOD["pairs"] + ["--sql", "nope.sql"]),
        Case(3, "pairs", "--sql not a query", GOOD["pairs"] + ["--sql", "r.sql"],
             lambda ws: (ws / "r.sql").write_text("DROP TABLE candidates")),
        Case(3, "pairs", "--replay of another schema", GOOD["pairs"] + ["--replay", S]),
    ]
    return out


def _gpt2_setup(ws: Path) -> None:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(ws / M)
    shutil.rmtree(ws / M)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(ws / M)
    tok.save_pretrained(ws / M)


# ---------------------------------------------------------------- running one case

def _state(folder: Path) -> dict[str, tuple]:
    out = {}
    for p in folder.rglob("*"):
        try:
            st = os.lstat(p)
        except OSError:
            continue
        out[str(p.relative_to(folder))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def run_case(case: Case, template: Path, timeout: float) -> tuple[str, str]:
    ws = Path(tempfile.mkdtemp(prefix="dno-corpus-"))
    try:
        shutil.copytree(template, ws, dirs_exist_ok=True, symlinks=True)
        if case.setup is not None:
            case.setup(ws)
        before = _state(ws)
        try:
            proc = subprocess.run([sys.executable, "-m", "stages.cli", *case.args], cwd=ws, env=_env(),
                                  capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return "hang", f"still running after {timeout:.0f} s"
        err = proc.stderr
        if case.secret:
            leaked = SECRET in err + proc.stdout or any(
                SECRET.encode() in p.read_bytes() for p in ws.rglob("*") if p.is_file() and not p.is_symlink())
            return ("secret", "the secret reached a file or the terminal") if leaked else ("clean", "")
        if "Traceback" in err:
            return "traceback", err.strip().splitlines()[-1][:200]
        if proc.returncode == 0:
            return "exit-0", (err.strip().splitlines() or [""])[-1][:200]
        lines = err.strip().splitlines()
        if proc.returncode != 1 or len(lines) != 1 or not lines[0].startswith("error:"):
            return "not-1-line", f"exit {proc.returncode}, {len(lines)} lines: {(lines or [''])[0][:160]}"
        after = _state(ws)
        new = sorted(set(after) - set(before))
        changed = sorted(k for k in before if k in after and after[k] != before[k] and not os.path.isdir(ws / k))
        gone = sorted(set(before) - set(after))
        if new or changed or gone:
            return "leftovers", f"new {new[:3]} changed {changed[:3]} gone {gone[:3]}"
        return "clean", lines[0][:160]
    finally:
        shutil.rmtree(ws, ignore_errors=True)


OUTCOMES = ("clean", "traceback", "not-1-line", "exit-0", "leftovers", "secret", "hang")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="only the cases of this command")
    ap.add_argument("--match", help="only the cases whose name holds this text")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before a case counts as a hang")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    todo = [c for c in cases() if args.only in (None, c.command) and (args.match or "") in c.name]
    if args.list:
        for c in todo:
            print(f"{c.cls}  {c.command:8s} {c.name}")
        print(f"{len(todo)} cases")
        return
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="dno-corpus-template-") as tpl:
        template = Path(tpl)
        build_template(template)
        for cmd in sorted({c.command for c in todo}):  # the valid forms run: each case changes one thing
            outcome = subprocess.run([sys.executable, "-m", "stages.cli", *GOOD[cmd]], cwd=_copy(template),
                                     env=_env(), capture_output=True, text=True, timeout=args.timeout)
            if outcome.returncode != 0:
                raise SystemExit(f"the valid form of {cmd} failed: {outcome.stderr.strip()[-400:]}")
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda c: run_case(c, template, args.timeout), todo))
    by_outcome = Counter(o for o, _ in results)
    by_command: dict[str, Counter] = defaultdict(Counter)
    by_class: dict[int, Counter] = defaultdict(Counter)
    for c, (o, _) in zip(todo, results):
        by_command[c.command][o] += 1
        by_class[c.cls][o] += 1
    print(f"{len(todo)} bad inputs across {len(by_command)} commands in {time.time() - t0:.0f} s "
          f"(python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    print("  " + "  ".join(f"{o} {by_outcome[o]}" for o in OUTCOMES))
    width = max(len(k) for k in by_command)
    print("\nper command:")
    for k in sorted(by_command):
        print(f"  {k.ljust(width)}  " + "  ".join(f"{o} {by_command[k][o]}" for o in OUTCOMES if by_command[k][o]))
    print("\nper class of the issue (1 -o, 2 content, 3 failure paths, 4 leftovers, 5 special files, 6 secrets, "
          "7 messages):")
    for k in sorted(by_class):
        print(f"  {k}  " + "  ".join(f"{o} {by_class[k][o]}" for o in OUTCOMES if by_class[k][o]))
    bad = [(c, r) for c, r in zip(todo, results) if r[0] != "clean"]
    if bad:
        print("\nnot clean:")
        for c, (o, why) in bad:
            print(f"  [{o}] {c.command}: {c.name}: {why}")
    sys.exit(1 if bad else 0)


def _copy(template: Path) -> Path:
    ws = Path(tempfile.mkdtemp(prefix="dno-corpus-"))
    shutil.copytree(template, ws, dirs_exist_ok=True, symlinks=True)
    return ws


if __name__ == "__main__":
    main()
