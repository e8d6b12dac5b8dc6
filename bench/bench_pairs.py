"""`dno pairs` at scale, against a plain-Python best-vs-worst loop and a bare DuckDB scan-and-write floor.

    python bench/bench_pairs.py --prompts 100000                  # scores, 5 policy + 1 teacher a prompt
    python bench/bench_pairs.py --prompts 1000000 --rule paper    # the paper rule (teacher included)
    python bench/bench_pairs.py --prompts 200000 --pairwise       # 30 pairwise rows a prompt (both orders)
    python bench/bench_pairs.py --prompts 200000 --chat           # chat-length answers (about 1.5k characters)
    python bench/bench_pairs.py --prompts 2000 --chat 300         # ... of about 300 characters; a quick check
    python bench/bench_pairs.py --smoke                           # the same: the smallest size (tests/test_bench.py)

Writes synthetic samples.parquet (with each answer's repetition ratio, measured as `dno sample`
measures it; the time it took is printed) and judgments.parquet, not timed (--folder DIR --reuse
keeps and reuses them), then times, each as its own process (wall seconds and the process's peak
RSS from wait4):
  dno     `python -m stages.cli pairs J S -o pairs.parquet --rule RULE --max-repetition 1` (the
          whole command, with the lineage hashing of its inputs; no n-gram check, as the loop)
  dno-rep the same with the default --max-repetition 0.5: the n-gram check of every response
          (a failed run, e.g. out of memory, is reported with its last error line, not fatal)
  loop    the research scripts' plain-Python best-vs-worst loop, streaming both files in prompt
          order (the files are written grouped by prompt, which the loop relies on) and writing
          (prompt, chosen, rejected, texts, margin) rows with a pyarrow ParquetWriter; no n-gram check
  floor   a bare DuckDB scan of the columns dno reads and a write of the samples columns it
          copies into pairs, every sample's (COPY ... TO parquet), no logic
With --rule best-worst, checks that dno and the loop give the same number of pairs and the
same total score margin (which pair wins a tie may differ).

Measured on 2 cores shared with other work (load average 1.0-2.3), 2026-12-05, default --memory-limit
(auto: 1GB for best-worst, 1.5GB for the paper rules), each line one run of this script; whole-process
times, the imports (about 2 s) and the lineage's hashing of the inputs (4 s for 5 GB) included:
  best-worst, scores      dno (no n-gram check)   with the check     Python loop       DuckDB floor
  chat answers, --chat (1.5k characters; the ratios took 85 us a sample to measure when written):
    200k x 6               9.20 s, 1.68 GB         9.24 s, 1.68 GB    8.94 s, 2.07 GB   11.90 s, 3.69 GB
    1M x 6                 46.42 s, 1.74 GB        42.81 s, 1.72 GB   50.05 s, 6.00 GB  52.57 s, 5.54 GB
  chat answers of 300 characters, --chat 300 (9 us a sample):
    1M x 6                 20.25 s, 1.73 GB        21.06 s, 1.72 GB   23.19 s, 1.52 GB  16.41 s, 1.84 GB
  short templated answers (about 90 characters):
    1M x 6                 14.61 s, 1.57 GB        13.54 s, 1.58 GB   16.75 s, 0.43 GB  4.28 s, 1.17 GB
    2000 x 6, --chat       2.51 s, 0.48 GB         2.80 s, 0.48 GB    0.75 s            0.64 s
  best-worst, pairwise    200k x 30 rows: 6.24 s, 1.14 GB (loop 10.56 s, floor 2.80 s)
  paper rule, scores      1M x 6 short (5.85M pairs): 31.9 and 33.4 s, 2.08-2.09 GB; with --memory-limit 3GB
                          30.0 s, 3.55 GB (the build before the texts-last stream: 30.5 and 31.4 s, 3.46-3.51 GB);
                          1M x 6 --chat (5.85M pairs, a 5.1 GB file): 114.4 s, 2.25 GB
Before the texts-last stream and the stored repetition ratio, at 200k x 6 --chat the command ran out of
DuckDB's memory with its defaults, with the traceback: after 25.2 s (1.82 GB) without the n-gram check,
after 169.5 s (4.96 GB) with it (samples written in row groups of 120k rows); the loop took 10.6 s and
the floor 12.7 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

K = 5  # policy samples a prompt, plus one teacher
FILLER = "so the result follows from the steps above and we can check it once more"


# ---------------------------------------------------------------- synthetic inputs

class ChatText:
    """Answers like a chat model's: words drawn from a 30k-word vocabulary by a Zipf law (short words
    frequent), some with a comma or full stop, line breaks between paragraphs, lengths log-normal
    around `chars` characters (about 0.6x to 1.7x it for the middle 90 %); 1 % of the policy answers
    fall into a loop (a 12-word phrase repeated), which the n-gram check makes automatic negatives."""

    VOCAB = 30_000

    def __init__(self, rng: np.random.Generator, chars: int):
        lens = np.clip(rng.poisson(5.0, self.VOCAB) + 1, 1, 16)
        letters = rng.integers(97, 123, int(lens.sum()), dtype=np.uint8)
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
        words = pa.StringArray.from_buffers(self.VOCAB, pa.py_buffer(offsets), pa.py_buffer(letters.tobytes()))
        order = np.argsort(lens, kind="stable")  # the frequent words are the short ones
        words = pc.take(words, pa.array(order))
        punct = rng.choice(["", "", "", "", "", "", "", "", ",", "."], self.VOCAB)
        self.words = pc.binary_join_element_wise(words, pa.array(punct), "")
        self.words = pa.concat_arrays([self.words.cast(pa.string()), pa.array(["\n\n"], pa.string())])
        p = 1.0 / np.arange(1, self.VOCAB + 1) ** 1.05
        p = np.concatenate([0.97 * p / p.sum(), [0.03]])  # a paragraph break 3 % of the tokens
        self.cdf = np.cumsum(p)
        self.cdf[-1] = 1.0
        word_chars = pc.utf8_length(self.words).to_numpy()
        self.chars_per_word = float((np.diff(np.concatenate([[0.0], self.cdf])) * (word_chars + 1)).sum())
        self.chars = chars
        self.rng = rng

    def answers(self, m: int, loops: np.ndarray) -> pa.Array:
        """`m` answers; those where `loops` is true repeat their first 12 words to the end."""
        length = np.clip(self.rng.lognormal(np.log(self.chars) - 0.06, 0.35, m), 20, 8 * self.chars)
        n_words = np.maximum(3, np.round(length / self.chars_per_word)).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(n_words)])
        ids = np.searchsorted(self.cdf, self.rng.random(int(starts[-1]))).astype(np.int32)
        ids = np.minimum(ids, len(self.words) - 1)
        loop_rows = np.flatnonzero(loops & (n_words > 24))
        if len(loop_rows):
            pos = np.concatenate([np.arange(starts[r] + 12, starts[r + 1]) for r in loop_rows])
            first = np.repeat(starts[loop_rows], n_words[loop_rows] - 12)
            ids[pos] = ids[first + (pos - first) % 12]
        listed = pa.ListArray.from_arrays(pa.array(starts.astype(np.int32)), pc.take(self.words, ids))
        return pc.binary_join(listed, " ")


def _samples_chunk(p0: int, p1: int, text: ChatText | None, rng: np.random.Generator, spent: list) -> pa.Table:
    """The samples of prompts p0..p1-1: K policy answers and a teacher answer each, grouped by prompt.
    Adds to spent[0] the seconds the repetition ratios took to measure."""
    from dno_data.repetition import ratio_array

    n = K + 1
    m = (p1 - p0) * n
    pids = pa.array([f"p{p:07d}" for p in range(p0, p1)])
    idx = np.tile(np.arange(n), p1 - p0)
    prompt_id = pc.take(pids, pa.array(np.repeat(np.arange(p1 - p0), n)))
    sample_id = pc.binary_join_element_wise(prompt_id, pc.cast(pa.array(idx), pa.string()), "-")
    teacher = idx == K
    if text is None:  # short answers: policy answers repeat (3 texts a prompt)
        question = pc.binary_join_element_wise(pa.array(["question"] * m), prompt_id, " ")
        variant = pc.cast(pa.array(np.where(teacher, 9, idx % 3)), pa.string())
        response = pc.binary_join_element_wise(pa.array(np.where(teacher, "gold", "answer")), prompt_id, variant,
                                               pa.array([FILLER] * m), " ")
    else:  # chat answers, every one its own text; a question of about 200 characters a prompt
        saved = text.chars
        text.chars = 200
        asked = text.answers(p1 - p0, np.zeros(p1 - p0, bool))
        text.chars = saved
        question = pc.take(pc.binary_join_element_wise(pids, asked, ": "), pa.array(np.repeat(np.arange(p1 - p0), n)))
        response = text.answers(m, ~teacher & (rng.random(m) < 0.01))
    msg = pa.StructArray.from_arrays([pa.array(["user"] * m), question], names=["role", "content"])
    messages = pa.ListArray.from_arrays(pa.array(np.arange(m + 1, dtype=np.int32)), msg)
    t0 = time.perf_counter()
    repetition = ratio_array(response)  # as `dno sample` measures it when it writes a sample
    spent[0] += time.perf_counter() - t0
    return pa.table({
        "sample_id": sample_id, "prompt_id": prompt_id, "messages": messages, "prompt_text": question,
        "reference": pa.nulls(m, pa.string()), "response": response,
        "source": pa.array(np.where(teacher, "teacher", "policy")),
        "generator": pa.array(["bench"] * m), "generator_id": pa.array(["bench"] * m),
        "sample_index": pa.array(np.where(teacher, 0, idx).astype(np.int32)),
        "seed": pa.array(np.zeros(m, dtype=np.int64)), "temperature": pa.array(np.full(m, 0.7, np.float32)),
        "top_p": pa.array(np.full(m, 0.95, np.float32)),
        "num_tokens": pc.cast(pc.divide(pc.utf8_length(response), 4), pa.int32()),
        "finish_reason": pa.array(np.where(teacher, "teacher", "stop")),
        "repetition": repetition,
    })


def synthetic(folder: Path, n_prompts: int, pairwise: bool, seed: int = 0, chars: int | None = None
              ) -> tuple[Path, Path]:
    """samples.parquet (K policy + 1 teacher a prompt, grouped by prompt) and judgments.parquet:
    one random 1..6 score a sample, or every ordered pair of a prompt's candidates (30 rows).
    `chars`: chat-length answers of about that many characters (ChatText), else short templated ones.
    The samples are written in chunks of prompts (bounded memory), as `dno sample` writes them."""
    import pyarrow.parquet as pq

    import schemas
    from dno_data.artifacts import rows_per_group, to_table, write_artifact

    rng = np.random.default_rng(seed)
    text = ChatText(rng, chars) if chars else None
    spec = schemas.get("samples")
    s_path = folder / "samples.parquet"
    meta = {b"dno.schema": spec.name.encode(), b"dno.schema_version": str(spec.version).encode()}
    chunk = 20_000 if chars else 200_000
    spent = [0.0]
    with pq.ParquetWriter(s_path, spec.schema.with_metadata(meta), compression="zstd") as writer:
        for p0 in range(0, n_prompts, chunk):
            table = to_table(_samples_chunk(p0, min(n_prompts, p0 + chunk), text, rng, spent), "samples")
            # row groups as dno's own writer (write_artifact) makes them
            writer.write_table(table, row_group_size=rows_per_group(table.nbytes / len(table)))
    (folder / "measured.txt").write_text(f"{spent[0]:.3f}\n")

    n = K + 1
    m = n_prompts * n
    pids = pa.array([f"p{p:07d}" for p in range(n_prompts)])
    idx = np.tile(np.arange(n), n_prompts)
    prompt_id = pc.take(pids, pa.array(np.repeat(np.arange(n_prompts), n)))
    sample_id = pc.binary_join_element_wise(prompt_id, pc.cast(pa.array(idx), pa.string()), "-")
    if not pairwise:
        score = rng.integers(1, 7, m).astype(np.float64)
        j = {"judgment_id": pc.binary_join_element_wise(pa.array(["j"] * m), sample_id, "-"),
             "prompt_id": prompt_id, "kind": pa.array(["score"] * m), "sample_id_a": sample_id,
             "sample_id_b": pa.nulls(m, pa.string()), "position": pa.array(idx.astype(np.int32)),
             "score": pa.array(score), "prob_a_wins": pa.nulls(m, pa.float64())}
    else:
        quality = rng.normal(size=m)
        a_of, b_of = np.array([(a, b) for a in range(n) for b in range(n) if a != b]).T  # 30 ordered pairs
        rows = n_prompts * len(a_of)
        base = np.repeat(np.arange(n_prompts) * n, len(a_of))
        a = base + np.tile(a_of, n_prompts)
        b = base + np.tile(b_of, n_prompts)
        p = 1 / (1 + np.exp(-(quality[a] - quality[b] + rng.normal(scale=0.3, size=rows))))
        ids = pc.binary_join_element_wise(pc.take(sample_id, pa.array(a)), pc.take(sample_id, pa.array(b)), ">")
        j = {"judgment_id": ids, "prompt_id": pc.take(prompt_id, pa.array(a)), "kind": pa.array(["pair"] * rows),
             "sample_id_a": pc.take(sample_id, pa.array(a)), "sample_id_b": pc.take(sample_id, pa.array(b)),
             "position": pa.array((np.tile(a_of, n_prompts) > np.tile(b_of, n_prompts)).astype(np.int32)),
             "score": pa.nulls(rows, pa.float64()), "prob_a_wins": pa.array(np.round(p, 3))}
        m = rows
    j.update({"judge_id": pa.array(["bench"] * m), "judge": pa.array(["bench"] * m),
              "correct": pa.nulls(m, pa.bool_()), "status": pa.array(["ok"] * m),
              "error": pa.nulls(m, pa.string()), "raw_output": pa.nulls(m, pa.string()),
              "justification": pa.nulls(m, pa.string()), "call_key": pa.nulls(m, pa.string()),
              "cached": pa.nulls(m, pa.bool_())})
    j_path = write_artifact(pa.table(j), folder / "judgments.parquet", "judgments", None, durable=False)
    for path, name in ((s_path, "samples"), (j_path, "judgments")):
        stamp_key_digest(path, name)
    return s_path, j_path


def stamp_key_digest(path: Path, schema_name: str) -> None:
    """Record the key digest dno's writer records (dno_data.artifacts.key_digest) in a file written here, so
    the inputs are what `dno sample` and `dno judge` write; older code ignores it."""
    import pyarrow.parquet as pq

    from dno_data.artifacts import KEY_DIGEST, KEYS, key_digest

    pf = pq.ParquetFile(path)
    digest = key_digest(pq.read_table(path, columns=list(KEYS[schema_name])), schema_name)
    meta = {**(pf.schema_arrow.metadata or {}), KEY_DIGEST: digest.encode()}
    tmp = path.with_name(path.name + ".stamp")
    with pq.ParquetWriter(tmp, pf.schema_arrow.with_metadata(meta), compression="zstd") as writer:
        for g in range(pf.num_row_groups):
            writer.write_table(pf.read_row_group(g))
    tmp.replace(path)


# ---------------------------------------------------------------- the contenders (each run in its own process)

def loop_best_worst(s_path: Path, j_path: Path, out: Path, pairwise: bool) -> None:
    """The research scripts' loop: stream both files prompt by prompt, best against worst."""
    import pyarrow.parquet as pq

    s_rows = (r for b in pq.ParquetFile(s_path).iter_batches(
        65536, columns=["prompt_id", "sample_id", "source", "response"]) for r in b.to_pylist())
    cols = ["prompt_id", "sample_id_a", "sample_id_b", "prob_a_wins"] if pairwise else ["prompt_id", "sample_id_a",
                                                                                          "score", "status"]
    j_rows = (r for b in pq.ParquetFile(j_path).iter_batches(65536, columns=cols) for r in b.to_pylist())
    schema = pa.schema([("prompt_id", pa.string()), ("chosen_sample_id", pa.string()),
                        ("rejected_sample_id", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()),
                        ("margin", pa.float64())])
    writer = pq.ParquetWriter(out, schema, compression="zstd")
    buf: list[dict] = []
    per_prompt = K * (K + 1) if pairwise else K + 1
    j_next = next(j_rows, None)
    while True:
        group = [r for _, r in zip(range(K + 1), s_rows)]
        if not group:
            break
        pid = group[0]["prompt_id"]
        rows = []
        while j_next is not None and j_next["prompt_id"] == pid and len(rows) < per_prompt:
            rows.append(j_next)
            j_next = next(j_rows, None)
        if pairwise:
            policy = {g["sample_id"] for g in group if g["source"] == "policy"}
            sums: dict = {}
            for r in rows:  # both orders: P(a > b) and 1 - P(b > a)
                for x, y, p in ((r["sample_id_a"], r["sample_id_b"], r["prob_a_wins"]),
                                (r["sample_id_b"], r["sample_id_a"], 1 - r["prob_a_wins"])):
                    if y in policy:
                        s, c = sums.get(x, (0.0, 0))
                        sums[x] = (s + p, c + 1)
            value = {x: s / c for x, (s, c) in sums.items()}
        else:
            value = {r["sample_id_a"]: r["score"] for r in rows if r["status"] == "ok" and r["score"] is not None}
        judged = [g for g in group if g["sample_id"] in value]
        if len(judged) < 2:
            continue
        best = max(judged, key=lambda g: value[g["sample_id"]])
        worst = min(judged, key=lambda g: value[g["sample_id"]])
        gap = value[best["sample_id"]] - value[worst["sample_id"]]
        if gap > 0:
            buf.append({"prompt_id": pid, "chosen_sample_id": best["sample_id"],
                        "rejected_sample_id": worst["sample_id"], "chosen": best["response"],
                        "rejected": worst["response"], "margin": gap})
        if len(buf) >= 65536:
            writer.write_table(pa.Table.from_pylist(buf, schema))
            buf = []
    if buf:
        writer.write_table(pa.Table.from_pylist(buf, schema))
    writer.close()


def floor_scan_write(s_path: Path, j_path: Path, out: Path, pairwise: bool) -> None:
    """A bare DuckDB scan of the columns dno reads and a write of the samples columns it copies."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads TO 2")
    j_cols = "prompt_id, sample_id_a, sample_id_b, kind, status, prob_a_wins" if pairwise else \
        "sample_id_a, kind, status, score"
    con.execute(f"COPY (SELECT {j_cols} FROM read_parquet('{j_path}')) TO '{out}.j.parquet' (FORMAT parquet)")
    con.execute(f"""COPY (SELECT sample_id, prompt_id, messages, prompt_text, response, source, finish_reason
                          FROM read_parquet('{s_path}')) TO '{out}' (FORMAT parquet, COMPRESSION zstd)""")


def timed(cmd: list[str], env: dict | None = None, may_fail: bool = False) -> tuple[float, float, str | None]:
    """Wall seconds, peak RSS (MB) and, for a command that failed (when `may_fail`), the last line of
    its error output, of a child process."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:  # a pipe would block a child that writes much to stderr
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        dt = time.perf_counter() - t0
        err.seek(0)
        text = err.read().decode(errors="replace")
    if status != 0 and not may_fail:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{text}")
    failed = ((text.strip().splitlines() or ["?"])[-1][:160] or "?") if status != 0 else None
    return dt, usage.ru_maxrss / 1024, failed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=100_000)
    ap.add_argument("--pairwise", action="store_true", help="30 pairwise rows a prompt instead of 6 scores")
    ap.add_argument("--rule", default="best-worst", help="best-worst | paper | paper-best (dno only)")
    ap.add_argument("--memory-limit", default=None, help="dno pairs --memory-limit (default: its own)")
    ap.add_argument("--skip", default="", help="comma list of contenders not to run: dno,dno-rep,loop,floor")
    ap.add_argument("--chat", type=int, nargs="?", const=1500, default=None, metavar="CHARS",
                    help="realistic chat-length answers of about CHARS characters (default 1500) of varied words, "
                         "instead of short templated ones")
    ap.add_argument("--folder", type=Path, default=None, help="keep the files here (default: a temp folder)")
    ap.add_argument("--reuse", action="store_true", help="with --folder: use the inputs already there")
    ap.add_argument("--smoke", action="store_true", help="the smallest size: --prompts 2000 --chat 300 (seconds)")
    ap.add_argument("--one", nargs=4, help=argparse.SUPPRESS)  # internal: run one contender in this process
    args = ap.parse_args()
    if args.smoke:
        args.prompts, args.chat = 2000, args.chat or 300
    if args.one and args.one[0] == "gen":
        kind, _, chars = args.one[3].partition(":")
        synthetic(Path(args.one[1]), int(args.one[2]), kind == "pairwise", chars=int(chars) if chars else None)
        return
    if args.one:
        name, s, j, out = args.one
        pairwise = name.endswith("-pairwise")
        {"loop": loop_best_worst, "floor": floor_scan_write}[name.split("-")[0]](Path(s), Path(j), Path(out),
                                                                                 pairwise)
        return

    tmp = tempfile.TemporaryDirectory(prefix="bench-pairs-") if args.folder is None else None
    folder = Path(tmp.name) if tmp else args.folder
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    # in a process of its own: a child's peak RSS (wait4) counts the memory of the parent it forked from
    s_path, j_path = folder / "samples.parquet", folder / "judgments.parquet"
    if not (args.reuse and s_path.exists() and j_path.exists()):
        timed([sys.executable, __file__, "--one", "gen", str(folder), str(args.prompts),
               ("pairwise" if args.pairwise else "scores") + (f":{args.chat}" if args.chat else "")], env)
    kind = "pairwise (30 rows a prompt)" if args.pairwise else "scores (6 a prompt)"
    if args.chat:
        import pyarrow.parquet as pq

        resp = pq.ParquetFile(s_path).read_row_group(0, columns=["response"])["response"]
        kind += f", chat answers of {pc.mean(pc.utf8_length(resp)).as_py():.0f} characters on average"
    print(f"{args.prompts} prompts x {K + 1} candidates, {kind}; inputs written in {time.perf_counter() - t0:.1f} s "
          f"({s_path.stat().st_size / 1e6:.0f} MB samples, {j_path.stat().st_size / 1e6:.0f} MB judgments); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    measured = folder / "measured.txt"
    if measured.exists():
        n = args.prompts * (K + 1)
        print(f"  the repetition ratios took {float(measured.read_text()):.1f} s to measure when the samples were "
              f"written ({float(measured.read_text()) / n * 1e6:.0f} us a sample: what `dno sample` adds, once)")
    skip = set(filter(None, args.skip.split(",")))
    results = {}
    cmd = [sys.executable, "-m", "stages.cli", "pairs", str(j_path), str(s_path), "--rule", args.rule, "--force"]
    if args.memory_limit:
        cmd += ["--memory-limit", args.memory_limit]
    if "dno" not in skip:  # as the loop: no repetition check
        results["dno"] = timed(cmd + ["-o", str(folder / "pairs.parquet"), "--max-repetition", "1"], env, True)
    if "dno-rep" not in skip:  # the default: the n-gram check on every response
        results["dno-rep"] = timed(cmd + ["-o", str(folder / "pairs-rep.parquet")], env, True)
    suffix = "-pairwise" if args.pairwise else ""
    if "loop" not in skip:
        results["loop"] = timed([sys.executable, __file__, "--one", "loop" + suffix, str(s_path), str(j_path),
                                 str(folder / "loop.parquet")], env)
    if "floor" not in skip:
        results["floor"] = timed([sys.executable, __file__, "--one", "floor" + suffix, str(s_path), str(j_path),
                                  str(folder / "floor.parquet")], env)
    names = {"dno": f"dno pairs --rule {args.rule} --max-repetition 1",
             "dno-rep": "  the same with the repetition check", "loop": "plain-Python best-vs-worst loop",
             "floor": "bare DuckDB scan + write"}
    for k, (dt, rss, failed) in results.items():
        print(f"  {names[k]:<44} {dt:7.2f} s   peak RSS {rss:7.0f} MB" + (f"   FAILED: {failed}" if failed else ""))
    results = {k: v for k, v in results.items() if not v[2]}
    for k in ("dno", "dno-rep"):
        if k in results and "loop" in results:
            print(f"  {k} vs loop: {results['loop'][0] / results[k][0]:.2f}x faster")
        if k in results and "floor" in results:
            print(f"  {k} vs floor: {results[k][0] / results['floor'][0]:.2f}x the floor's time")
    if args.rule == "best-worst" and {"dno", "loop"} <= set(results):
        import duckdb

        got = duckdb.sql(f"SELECT count(*), round(sum(margin), 6) FROM read_parquet('{folder / 'pairs.parquet'}')"
                         ).fetchall()[0]
        ref = duckdb.sql(f"SELECT count(*), round(sum(margin), 6) FROM read_parquet('{folder / 'loop.parquet'}')"
                         ).fetchall()[0]
        same = duckdb.sql(f"""SELECT count(*) FROM read_parquet('{folder / 'pairs.parquet'}') d
                              JOIN read_parquet('{folder / 'loop.parquet'}') l
                              USING (chosen_sample_id, rejected_sample_id)""").fetchall()[0][0]
        print(f"  pairs: dno {got[0]} (total margin {got[1]}), loop {ref[0]} (total margin {ref[1]}); "
              f"{same} identical, the rest differ only in which tied sample was picked")
        assert got[0] == ref[0] and abs(got[1] - ref[1]) <= 1e-6 * max(1.0, abs(ref[1])), "dno and the loop disagree"
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
