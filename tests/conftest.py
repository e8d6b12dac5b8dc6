"""Shared fixtures: a tiny random causal LM, a small prompts file, CLI and artifact helpers.

Where each module is tested (tests/test_help.py checks that every module is in this map):

  dno_data/api.py                  test_stage_api.py (the Python API makes what the CLI makes)
  dno_data/stages/__init__.py      test_help.py (the registry), test_options.py (every command's config)
  dno_data/stages/common.py        test_output_guard.py (-o), test_options.py (one way to redo)
  dno_data/stages/prompts.py       test_prompts.py, test_cli.py
  dno_data/stages/sample.py        test_resume.py, test_sample_openai.py, test_cli.py
  dno_data/stages/merge.py         test_sharding.py
  dno_data/stages/judge.py         test_judges.py, test_openai_chat.py, test_call_cache.py, test_cli.py, test_batch_judge.py,
                                   test_slow_vllm.py (the failure-rate exit on a real bad judge)
  dno_data/stages/pairs.py         test_pairs.py, test_cli.py
  dno_data/stages/train.py         test_training.py, test_outputs.py, test_cli.py
  dno_data/stages/sft.py           test_sft.py, test_compare.py
  dno_data/stages/eval.py          test_eval_any_judge.py, test_options.py, test_cli.py
  dno_data/stages/export.py        test_trl_interop.py
  dno_data/stages/sql.py           test_cli.py, test_sql_lockdown.py, test_queries.py
  dno_data/stages/report.py        test_report.py
  dno_data/stages/model.py         test_bad_input.py (GGUF import errors), test_slow_vllm.py
  dno_data/stages/iterate.py       test_cli.py, test_stage_api.py, test_run_config.py, test_queries.py
  dno_data/stages/compare.py       test_compare.py
  dno_data/stages/demo.py          test_addition_task.py
  dno_data/config/__init__.py      test_options.py
  dno_data/config/options.py       test_options.py (checks, groups), test_bad_input.py (the bad-value table)
  dno_data/config/base.py          test_options.py (checked on construction, argv round trips)
  dno_data/config/groups.py        test_options.py (one declaration per shared group)
  dno_data/config/run_file.py      test_run_config.py (--config run.toml), test_stage_api.py (a bad [train] table)
  dno_data/console.py              test_cli.py (summaries, up to date), test_engine_ray_faults.py (progress lines),
                                   test_progress_lines.py (every local stage's lines in a file, a bar on a terminal)
  dno_data/engines/__init__.py     test_engine_ray.py
  dno_data/engines/ray.py          test_engine_ray.py (ray == local; errors), test_engine_ray_faults.py (faults)
  dno_data/pair_rules.py           test_pairs.py (rules and parameters from the rule files' headers)
  dno_data/compare_table.py        test_compare.py (the table, intervals, the seed aggregation, the plot)
  dno_data/compare_tuning.py       test_compare.py (the grid, the validation split, the picks)
  bench/bench_startup.py           test_bench_startup.py (runs at its smallest size)
  bench/bench_engine.py            test_bench_engine.py (runs at its smallest size, second tier)
  bench/*.py, bench/gpu_check.sh   test_bench.py (each at its smallest size; test_every_bench_script_is_run),
                                   test_slow_bench.py (the vLLM ones, slow tier)

  dno_data/artifacts.py            test_artifacts.py, test_outputs.py, test_bad_input.py (checked reads)
  dno_data/lineage.py              test_artifacts.py, test_content_hash.py, test_sharding.py (up to date),
                                   test_reproducibility.py (the environment)
  dno_data/redact.py               test_bad_input.py (no secret of a URL in lineage or lines), test_openai_runner.py
  dno_data/reproducibility.py      test_reproducibility.py (threads, identical reruns)
  dno_data/parts.py                test_artifacts.py, test_resume.py (parts), test_concurrency.py (work folders)
  dno_data/output_lock.py          test_concurrency.py (two commands on one output)
  dno_data/storage.py              test_object_storage.py (URLs stay URLs, staging paths map back, one-line errors)
  dno_data/staging.py              test_object_storage.py (the loop on s3://, half-written folders refused, parts
                                   resumed on another machine, no secret in any object)
  dno_data/object_lease.py         test_object_storage.py (two writers on one s3:// output, a lapsed lease)
  dno_data/paths.py                test_output_guard.py (every command against every wrong -o; pipes as inputs),
                                   test_outputs.py
  dno_data/atomic.py               test_output_guard.py, test_artifacts.py (a crash keeps the old file)
  dno_data/folder_swap.py          test_training.py (checkpoints appear whole), test_bad_input.py (GGUF import)
  dno_data/errors.py               test_help.py (hints name only declared extras), test_bad_input.py (the classes
                                   of bad input: one error line for OSError, sandbox limits, DuckDB, usage errors)
  dno_data/ids.py                  test_artifacts.py, test_prompts.py
  dno_data/callables.py            test_judges.py (python: judges), test_resume.py (python: teachers)
  dno_data/prompts_import.py       test_prompts.py, test_multiturn.py (MT-Bench turns, --ask-turns)
  dno_data/hub.py                  test_hub.py (ids from a hub-layout cache offline: sample, train, reward judge)
  dno_data/models.py               test_template_check.py, test_tokenization.py, test_generation.py,
                                   test_reproducibility.py (model identity)
  dno_data/generation/__init__.py  test_generation.py (the registry, stop ids)
  dno_data/generation/base.py      test_generation.py, test_resume.py (per-prompt seeds)
  dno_data/generation/hf.py        test_generation.py, test_resume.py, test_template_check.py
  dno_data/generation/vllm.py      test_generation.py, test_slow_vllm_sample.py
  dno_data/generation/openai.py    test_sample_openai.py
  dno_data/sampling.py             test_resume.py, test_template_check.py, test_engine_ray.py (sample_batch on Ray)
  dno_data/sharding.py             test_sharding.py
  dno_data/teachers.py             test_sample_openai.py, test_resume.py, test_options.py (eval's openai teacher),
                                   test_slow_vllm_sample.py (a vLLM server as the teacher)
  dno_data/gguf_import.py          test_bad_input.py, test_slow_vllm.py
  dno_data/judges/__init__.py      test_judges.py (specs -> judges)
  dno_data/judges/base.py          test_judges.py, test_judge_run.py
  dno_data/judges/python_fn.py     test_judges.py, test_resume.py
  dno_data/judges/oracles.py       test_judges.py (oracle:addition), test_constraints_task.py (oracle:constraints)
  dno_data/judges/openai_chat.py   test_openai_chat.py, test_single_grade.py (--mode single), test_slow_vllm.py
  dno_data/judges/reward_model.py  test_reward_model.py
  dno_data/judges/parsing.py       test_openai_chat.py, test_single_grade.py (and its doctests)
  dno_data/judges/run.py           test_judge_run.py, test_judges.py, test_resume.py
  dno_data/openai_api/__init__.py  test_openai_runner.py
  dno_data/openai_api/runner.py    test_openai_runner.py, test_options.py (API settings pass-through)
  dno_data/openai_api/call_cache.py  test_call_cache.py
  dno_data/openai_api/costs.py     test_openai_chat.py (dry run, costs), test_report.py (cost spent),
                                   test_batch_judge.py (batch prices)
  dno_data/openai_api/batch.py     test_batch_judge.py (kill and resume by id, failed and expired requests, limits)
  dno_data/pairs.py                test_pairs.py (also --max-pairs), test_pairs_reference.py, test_sql_lockdown.py (--sql rules), test_trl_interop.py (TRL reads the file)
  dno_data/pairs_checks.py         test_pairs.py (refused before any work)
  dno_data/pairs_write.py          test_pairs.py (chat-length answers under a small memory limit), test_pairs_reference.py
  dno_data/repetition.py           test_pairs.py, test_pairs_reference.py (the n-gram check), test_resume.py (sampling)
  dno_data/preference_import.py    test_preference_import.py (files `datasets` writes; TRL's own rules agree)
  dno_data/export.py               test_trl_interop.py (dno export: TRL's data utilities accept it)
  dno_data/duckdb_sql.py           test_pairs.py, test_sql_lockdown.py, test_cli.py (dno sql)
  dno_data/losses.py               test_losses.py, test_kto.py (KTO against TRL's own code)
  dno_data/training/__init__.py    test_training.py, test_tokenization.py
  dno_data/training/options.py     test_training.py
  dno_data/training/data.py        test_tokenization.py, test_training.py (truncated responses, length groups),
                                   test_reproducibility.py (order independent of the rows), test_kto.py (KL sequences)
  dno_data/training/setup.py       test_training.py (dropout off, LoRA, mixed precision)
  dno_data/training/reference.py   test_training.py, test_resume.py
  dno_data/training/fit.py         test_training.py (ln 2 first loss, the schedule on N processes), test_resume.py
  dno_data/training/save.py        test_training.py (the model alone; records beside it; LoRA adapters), test_resume.py,
                                   test_sft.py (no reference)
  dno_data/training/card.py        test_training.py (the model card)
  dno_data/training/sft.py         test_sft.py (the NLL masks the prompt, the sources, cycling), test_compare.py
  dno_data/evaluation.py           test_cli.py, test_eval_any_judge.py, test_constraints_task.py,
                                   test_multiturn.py (turn after turn), test_engine_ray.py (answers on Ray)
  dno_data/run_layout.py           test_cli.py
  dno_data/run_views.py            test_cli.py, test_sql_lockdown.py
  dno_data/queries.py              test_queries.py
  dno_data/stats.py                test_stats.py
  dno_data/report/__init__.py      test_report.py
  dno_data/report/data.py          test_report.py (numbers, best iterate, costs), test_multiturn.py (per turn)
  dno_data/report/plots.py         test_report.py (the PNGs)
  dno_data/report/page.py          test_report.py (the page, dno report)
  dno_data/loop.py                 test_cli.py (dno iterate, the justfile), test_compare.py (offline-dpo, sft),
                                   test_train_launcher.py (--train-launcher, two processes),
                                   test_stage_api.py (every stage checked first; no working folder shadows dno)
  dno_data/compare.py              test_compare.py (every method, offline-kto too, budgets, intervals, the plot)
  dno_data/tasks/__init__.py       test_constraints_task.py
  dno_data/tasks/addition.py       fixtures here (tiny_model), test_judges.py (oracle:addition), test_addition_task.py (split)
  dno_data/tasks/constraints.py    test_constraints_task.py, test_slow_smollm2.py (`just smollm2`, smallest size)
  dno_data/tasks/partial_sums.py   test_partial_sums_task.py (the judge, the prompts, the recipe's commands)
  stages/build.py                  test_options.py (the generated commands), test_run_config.py, test_bad_input.py
  stages/cli.py                    test_help.py, test_cli.py (end to end), test_stage_api.py (nothing heavy loaded)
  schemas/*.py                     test_artifacts.py
  tests/support/fake_openai.py     test_fake_openai.py
  tests/support/s3_server.py       test_object_storage.py (the S3-compatible server every test there uses)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from support.require_slow import pytest_runtest_makereport  # noqa: F401 (a hook: DNO_REQUIRE_SLOW=1)
from support.vllm_server import smollm2_dir, vllm_server  # noqa: F401 (the slow tier's session fixtures)

ROOT = Path(__file__).resolve().parents[1]

# Keep torch from spreading over cores another process may be using.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

try:  # in-process tests share the same limit
    import torch

    torch.set_num_threads(1)
except Exception:  # pragma: no cover
    pass


# ---------------------------------------------------------------- data

PROBLEMS = [
    (12, 34), (55, 21), (40, 7), (3, 96), (18, 18), (70, 22), (61, 9), (25, 25),
    (9, 90), (33, 44), (81, 11), (14, 60), (47, 52), (5, 5), (29, 30), (66, 13),
]


def problem_rows(n: int = 16) -> list[dict]:
    return [{"prompt": f"{a}+{b}", "reference": str(a + b)} for a, b in PROBLEMS[:n]]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def prompts_jsonl(tmp_path) -> Path:
    """16 addition problems {"prompt": "12+34", "reference": "46"}."""
    return write_jsonl(tmp_path / "problems.jsonl", problem_rows())


# ---------------------------------------------------------------- the tiny model

@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A random 1-layer Llama over the demo's character vocabulary, saved as an HF folder."""
    from dno_data.tasks import addition as demo_task

    tok = demo_task.build_tokenizer()
    model = demo_task.build_model(tok, hidden=32, layers=1, heads=2, seed=0)
    out = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model):
    from dno_data.models import load_tokenizer

    return load_tokenizer(tiny_model, padding_side="right")


# ---------------------------------------------------------------- CLI

def cli_env() -> dict:
    """The environment of a `python -m stages.cli` child started by hand: this checkout first on PYTHONPATH,
    no OPENAI_API_KEY (the fake server needs none)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("OPENAI_API_KEY", None)
    return env


def judge_groups(n: int, tag: str = "q", third: str = "teacher") -> list[tuple[str, list[tuple[str, str]]]]:
    """n prompts' candidates for the judge tests: a GOOD and a BAD policy answer (quality 6 and 1 on the fake
    server) and a teacher answer whose quality follows from its text."""
    return [(f"{tag} {i}?", [(f"{tag}{i} GOOD", "policy"), (f"{tag}{i} BAD", "policy"), (f"{tag}{i} {third}", "teacher")])
            for i in range(n)]


def run_cli(*args, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "stages.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout)


@pytest.fixture
def cli(tmp_path):
    """cli(*args) runs `python -m stages.cli ARGS` in tmp_path and returns the CompletedProcess."""

    def _run(*args, cwd: Path | None = None, env: dict | None = None):
        return run_cli(*args, cwd=cwd or tmp_path, env=env)

    return _run


# ---------------------------------------------------------------- artifacts built directly

def lineage(stage: str = "test", inputs=(), config=None) -> dict:
    from dno_data.lineage import make_lineage

    return make_lineage(stage, list(inputs), config or {})


MSGS = [{"role": "user", "content": "1+1"}]


def sample_row(sample_id: str, prompt_id: str, response: str, source: str = "policy", index: int = 0,
               messages=None, reference: str | None = None) -> dict:
    return {
        "sample_id": sample_id, "prompt_id": prompt_id, "messages": messages or MSGS,
        "prompt_text": "1+1=", "reference": reference, "response": response, "source": source,
        "generator": "test" if source == "policy" else "reference",
        "generator_id": "g" if source == "policy" else "t", "sample_index": index,
        "seed": 0 if source == "policy" else None, "temperature": 0.5 if source == "policy" else None,
        "top_p": 0.75 if source == "policy" else None, "num_tokens": len(response),
        "finish_reason": "stop" if source == "policy" else "teacher",
        "repetition": None,  # not measured: `dno pairs` measures it
    }


def score_row(sample_id: str, prompt_id: str, score: float | None, status: str = "ok", position: int = 0) -> dict:
    return {
        "judgment_id": f"j-{sample_id}-{position}", "prompt_id": prompt_id, "judge_id": "J", "judge": "test",
        "kind": "score", "sample_id_a": sample_id, "sample_id_b": None, "position": position,
        "score": score, "prob_a_wins": None, "correct": None, "status": status,
        "error": None if status == "ok" else "boom", "raw_output": None,
        "justification": None, "call_key": None, "cached": None,
    }


def pair_row(a: str, b: str, prompt_id: str, p: float | None, position: int, status: str = "ok") -> dict:
    return {
        "judgment_id": f"j-{a}-{b}-{position}", "prompt_id": prompt_id, "judge_id": "J", "judge": "test",
        "kind": "pair", "sample_id_a": a, "sample_id_b": b, "position": position,
        "score": None, "prob_a_wins": p, "correct": None, "status": status,
        "error": None if status == "ok" else "boom", "raw_output": None,
        "justification": None, "call_key": None, "cached": None,
    }


def prompt_row(pid: str = "p1", partition=1, split: str = "train", content: str = "1+1", reference="2") -> dict:
    return {"prompt_id": pid, "messages": [{"role": "user", "content": content}], "reference": reference,
            "follow_ups": None, "follow_up_references": None, "partition": partition, "split": split,
            "source": "x.jsonl:1"}


def pairs_row(pid: str = "p1", chosen_id: str = "a", rejected_id: str = "b", chosen: str = "2",
              rejected: str = "3", prompt_text: str | None = "1+1=") -> dict:
    return {
        "pair_id": f"{chosen_id}>{rejected_id}", "prompt_id": pid, "prompt": MSGS, "prompt_text": prompt_text,
        "chosen_sample_id": chosen_id, "rejected_sample_id": rejected_id,
        "chosen": [{"role": "assistant", "content": chosen}], "rejected": [{"role": "assistant", "content": rejected}],
        "chosen_source": "teacher", "rejected_source": "policy", "chosen_truncated": False,
        "rejected_truncated": False, "chosen_score": 6.0, "rejected_score": 1.0,
        "chosen_winrate": 1.0, "rejected_winrate": 0.0, "margin": 5.0, "pair_type": "teacher>policy",
        "rule": "paper", "target": 1.0, "replayed_from": None,
    }


def eval_row(pid: str = "p1") -> dict:
    return {"prompt_id": pid, "turn": 1, "messages": MSGS, "model": "m", "response": "2", "teacher_response": "2",
            "judge_id": "J", "policy_score": 6.0, "teacher_score": 6.0, "win": 0.5, "correct": True,
            "justification": None, "status": "ok", "error": None}


EXAMPLE_ROWS = {
    "prompts": lambda: [prompt_row("p1"), prompt_row("p2", partition=None, split="eval", content="2+2", reference=None)],
    "samples": lambda: [sample_row("s1", "p1", "2"), sample_row("s2", "p1", "2", source="teacher", reference="2")],
    "judgments": lambda: [score_row("s1", "p1", 6.0), score_row("s2", "p1", None, status="error"),
                          pair_row("s1", "s2", "p1", 0.25, 0)],
    "pairs": lambda: [pairs_row()],
    "eval": lambda: [eval_row()],
}


def write_example(path: Path, schema_name: str, rows=None) -> Path:
    from dno_data.artifacts import write_artifact

    return write_artifact(rows if rows is not None else EXAMPLE_ROWS[schema_name](), path, schema_name,
                          lineage(schema_name))


def rewrite_metadata(path: Path, **changes) -> None:
    """Rewrite a Parquet file's key-value metadata in place (keys like dno.schema_version)."""
    table = pq.read_table(path)
    meta = dict(table.schema.metadata or {})
    for k, v in changes.items():
        meta[k.encode()] = str(v).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


def drop_column(path: Path, column: str) -> None:
    table = pq.read_table(path)
    meta = table.schema.metadata
    table = table.drop_columns([column]).replace_schema_metadata(meta)
    pq.write_table(table, path)


@pytest.fixture
def stage_prompts(tmp_path, prompts_jsonl):
    """prompts.parquet from the 16 problems via stages.prompts.run (2 partitions, 4 eval)."""
    from dno_data.stages.prompts import PromptsConfig, run

    def _make(**kw):
        cfg = dict(src=prompts_jsonl, output=tmp_path / "prompts.parquet", reference_column="reference",
                   partitions=2, eval_size=4)
        cfg.update(kw)
        return run(PromptsConfig.from_options(**cfg))

    return _make


# ---------------------------------------------------------------- API judges (fake OpenAI server)

# Every fake server in the judge tests: loopback only, a hard time limit, short hangs.
FAKE_SERVER_SAFETY = {"max_seconds": 60, "hang_seconds": 2, "shutdown_timeout": 0.3}


def judge_groups_rows(groups: list[tuple[str, list[tuple[str, str]]]]) -> list[dict]:
    """Sample rows for `groups` = [(question, [(response, source), ...]), ...].

    prompt_id is the real hash of the messages; sample ids are "<prompt#>-<candidate#>".
    """
    from dno_data.ids import prompt_id as make_prompt_id

    rows = []
    for g, (question, candidates) in enumerate(groups):
        messages = [{"role": "user", "content": question}]
        pid = make_prompt_id(messages)
        for c, (response, source) in enumerate(candidates):
            rows.append(sample_row(f"q{g}-c{c}", pid, response, source=source, index=c, messages=messages))
    return rows


def write_judge_samples(path: Path, groups) -> Path:
    """A samples.parquet for judge tests (see judge_groups_rows)."""
    from dno_data.artifacts import write_artifact

    return write_artifact(judge_groups_rows(groups), path, "samples", lineage("samples"))


def standard_groups(n: int, neutral: bool = True) -> list[tuple[str, list[tuple[str, str]]]]:
    """n prompts, each with a GOOD and a BAD policy answer, a neutral one, and one teacher answer."""
    out = []
    for i in range(n):
        cands = [(f"answer {i} is GOOD", "policy"), (f"answer {i} is BAD", "policy")]
        if neutral:
            cands.append((f"plain answer {i}", "policy"))
        cands.append((f"teacher answer {i} GOOD", "teacher"))
        out.append((f"question number {i}?", cands))
    return out


# ---------------------------------------------------------------- object storage

S3_SECRET = "dno-test-SECRET-aws-7c41e9"  # AWS_SECRET_ACCESS_KEY while a test talks to the local S3 server


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3-compatible server on 127.0.0.1 (moto's server mode, tests/support/s3_server.py) for the session."""
    for package in ("moto.server", "s3fs", "boto3"):
        pytest.importorskip(package, reason="the object-storage tests need pip install 'dno-data[dev]'")
    from support.s3_server import s3_server

    with s3_server() as endpoint:
        yield endpoint


def s3_env(endpoint: str, cache: Path) -> dict:
    """What a machine needs to reach the test server: the standard AWS variables (a recognisable secret), and
    its own dno cache folder (the staging mirror)."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "dno-test-access-key",
            "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true", "DNO_CACHE": str(cache)}


def new_bucket(endpoint: str) -> str:
    import uuid

    import boto3

    name = f"dno-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="y",
                 region_name="us-east-1").create_bucket(Bucket=name)
    return name
