"""Hugging Face Hub ids wherever a model goes, resolved offline from a cache laid out as the hub writes it.

The cache is built here as huggingface_hub writes it: `$HF_HOME/hub/models--org--name/` with
`blobs/<etag>` (sha256 for LFS files such as safetensors, git's blob sha1 for the others),
`snapshots/<commit>/<file>` as relative symlinks to the blobs, and `refs/<branch>` holding a commit.
HF_HUB_OFFLINE=1 (conftest sets it) keeps every lookup in the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dno_data.errors import DnoError

REPO = "dno-test/tiny-policy"
REWARD_REPO = "dno-test/tiny-reward"
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def _etag(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".safetensors":  # an LFS file: its sha256
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


def add_snapshot(hub: Path, repo_id: str, commit: str, folder: Path, branches: tuple[str, ...] = ()) -> Path:
    """`folder`'s files as snapshot `commit` of `repo_id` in the cache `hub` (blobs + relative symlinks),
    each of `branches` pointing at it."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        etag = _etag(f)
        blob = repo / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            shutil.copyfile(f, blob)
        link = snap / f.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for b in branches:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / b).write_text(commit)
    return snap


def move_branch(hub: Path, repo_id: str, branch: str, commit: str) -> None:
    (hub / ("models--" + repo_id.replace("/", "--")) / "refs" / branch).write_text(commit)


@pytest.fixture(scope="session")
def tiny_model_b(tmp_path_factory) -> Path:
    """Another tiny policy (other weights, same tokenizer): the repository's second commit."""
    from dno_data.tasks import addition as demo_task

    tok = demo_task.build_tokenizer()
    model = demo_task.build_model(tok, hidden=32, layers=1, heads=2, seed=1)
    out = tmp_path_factory.mktemp("tiny-model-b")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def hf_home(tmp_path, tiny_model, tiny_model_b, monkeypatch) -> Path:
    """$HF_HOME whose hub cache holds REPO at COMMIT_A (main) and COMMIT_B (branch v2), offline."""
    home = tmp_path / "hf-home"
    add_snapshot(home / "hub", REPO, COMMIT_A, tiny_model, branches=("main",))
    add_snapshot(home / "hub", REPO, COMMIT_B, tiny_model_b, branches=("v2",))
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def snapshot_of(home: Path, repo_id: str, commit: str) -> Path:
    return home / "hub" / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit


# ---------------------------------------------------------------- resolution

def test_a_hub_id_resolves_to_its_snapshot_and_revisions_pick_others(hf_home):
    from dno_data.hub import resolve
    from dno_data.models import check_model_dir

    assert check_model_dir(REPO) == snapshot_of(hf_home, REPO, COMMIT_A)
    assert check_model_dir(REPO, revision="v2") == snapshot_of(hf_home, REPO, COMMIT_B)
    assert check_model_dir(f"{REPO}@v2") == snapshot_of(hf_home, REPO, COMMIT_B)
    assert check_model_dir(f"{REPO}@{COMMIT_B}") == snapshot_of(hf_home, REPO, COMMIT_B)
    assert resolve("runs/demo/iter-01/checkpoint") == "runs/demo/iter-01/checkpoint"  # not an id: as it is
    with pytest.raises(DnoError, match="name two revisions"):
        resolve(f"{REPO}@v2", revision="main")


def test_an_id_missing_offline_is_one_line_saying_what_to_do(hf_home, cli, tmp_path, stage_prompts):
    from dno_data.models import check_model_dir

    with pytest.raises(DnoError) as e:
        check_model_dir("dno-test/not-there")
    msg = str(e.value)
    assert "HF_HUB_OFFLINE" in msg and "hf download dno-test/not-there" in msg and "\n" not in msg
    with pytest.raises(DnoError, match="no revision|not in the Hugging Face cache"):
        check_model_dir(REPO, revision="v9")
    prompts = stage_prompts()
    r = cli("sample", prompts, "-o", tmp_path / "s.parquet", "--model", "dno-test/not-there", "-k", "1",
            env={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 1 and r.stderr.strip().startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr and "dno-test/not-there" in r.stderr
    assert not (tmp_path / "s.parquet").exists()


def test_a_local_folder_still_wins_and_takes_no_revision(tmp_path, tiny_model, monkeypatch):
    from dno_data.models import check_model_dir

    monkeypatch.chdir(tmp_path)
    local = tmp_path / "org" / "name"  # a relative path that reads like an id, but is a folder here
    shutil.copytree(tiny_model, local)
    assert check_model_dir("org/name") == Path("org/name")
    with pytest.raises(DnoError, match="a local folder; --revision"):
        check_model_dir("org/name", revision="main")
    with pytest.raises(DnoError, match="no such model folder"):
        check_model_dir("runs/no/such/folder")


# ---------------------------------------------------------------- stages

def _hub_inputs(path: Path) -> list[dict]:
    from dno_data.lineage import read_lineage

    return [i["hub"] for i in read_lineage(path)["inputs"] if "hub" in i]


def test_sample_on_a_hub_id_records_the_commit_and_revision_picks_another(hf_home, tmp_path, stage_prompts, cli):
    from dno_data.stages.sample import SampleConfig, run

    prompts = stage_prompts()
    common = dict(prompts=prompts, model=REPO, k=1, max_new_tokens=4, partition=1, batch_size=8)
    out = run(SampleConfig.from_options(output=tmp_path / "a.parquet", **common))
    assert _hub_inputs(out) == [{"repo_id": REPO, "commit": COMMIT_A}]
    lineage = json.loads(pq.read_schema(out).metadata[b"dno.lineage"])
    assert lineage["config"]["model"] == REPO  # the id as given, not this machine's cache path
    out_b = run(SampleConfig.from_options(output=tmp_path / "b.parquet", revision="v2", **common))
    assert _hub_inputs(out_b) == [{"repo_id": REPO, "commit": COMMIT_B}]
    ids_a = set(pq.read_table(out, columns=["sample_id"])["sample_id"].to_pylist())
    ids_b = set(pq.read_table(out_b, columns=["sample_id"])["sample_id"].to_pylist())
    assert not ids_a & ids_b  # other weights, other generator: other sample ids
    # the CLI, in a fresh process that reads HF_HOME and HF_HUB_OFFLINE itself
    r = cli("sample", prompts, "-o", tmp_path / "c.parquet", "--model", REPO, "--revision", "v2", "-k", "1",
            "--max-new-tokens", "4", "--partition", "1", env={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert _hub_inputs(tmp_path / "c.parquet") == [{"repo_id": REPO, "commit": COMMIT_B}]


def test_train_on_a_hub_id_follows_main_when_it_moves(hf_home, tmp_path, capsys):
    from conftest import pairs_row, write_example
    from dno_data.lineage import read_lineage
    from dno_data.stages.train import TrainConfig, run

    pairs = write_example(tmp_path / "pairs.parquet", "pairs",
                          [pairs_row("p1", "a", "b", "46", "47", "12+34="), pairs_row("p2", "c", "d", "76", "77", "55+21=")])
    cfg = TrainConfig.from_options(pairs=pairs, model=REPO, output=tmp_path / "ckpt", batch_size=2,
                                   learning_rate=1e-3, reference=f"{REPO}@v2")
    run(cfg)
    inputs = read_lineage(tmp_path / "ckpt")["inputs"]
    assert [i.get("hub") for i in inputs[1:]] == [{"repo_id": REPO, "commit": COMMIT_A},
                                                  {"repo_id": REPO, "commit": COMMIT_B}]
    capsys.readouterr()
    run(cfg)
    assert "up to date" in capsys.readouterr().err
    move_branch(hf_home / "hub", REPO, "main", COMMIT_B)  # the Hub's main moved (and was fetched)
    run(cfg)
    assert "up to date" not in capsys.readouterr().err
    assert read_lineage(tmp_path / "ckpt")["inputs"][1]["hub"] == {"repo_id": REPO, "commit": COMMIT_B}


def test_the_reward_judge_takes_a_hub_id(hf_home, tmp_path):
    from conftest import write_judge_samples
    from dno_data.artifacts import read_artifact
    from dno_data.lineage import read_lineage
    from dno_data.stages.judge import JudgeConfig, run
    from test_reward_model import build_reward_model

    folder = build_reward_model(tmp_path / "rm")
    add_snapshot(hf_home / "hub", REWARD_REPO, COMMIT_A, folder, branches=("main",))
    samples = write_judge_samples(tmp_path / "samples.parquet", [("p1", [("46", "policy"), ("47", "policy")])])
    out = run(JudgeConfig.from_options(samples=samples, output=tmp_path / "j.parquet", judge=f"reward:{REWARD_REPO}"))
    table = read_artifact(out, "judgments")
    assert set(table["status"].to_pylist()) == {"ok"}
    local = run(JudgeConfig.from_options(samples=samples, output=tmp_path / "j-local.parquet", judge=f"reward:{folder}"))
    assert read_artifact(local, "judgments")["judge_id"][0] == table["judge_id"][0]  # the same model, by content
    assert read_lineage(out)["config"]["judge_hub"] == {"repo_id": REWARD_REPO, "commit": COMMIT_A}


def test_ray_judge_workers_load_the_commit_the_driver_resolved(hf_home, tmp_path, monkeypatch):
    """--engine ray: every worker resolves the reward model again; it is given `reward:ID@<commit>`, the commit
    this process resolved and recorded, so a main that moves during the job cannot mix two models."""
    from conftest import write_judge_samples
    from dno_data.judges import run as judge_run
    from dno_data.stages.judge import JudgeConfig, run
    from test_reward_model import build_reward_model

    add_snapshot(hf_home / "hub", REWARD_REPO, COMMIT_A, build_reward_model(tmp_path / "rm"), branches=("main",))
    samples = write_judge_samples(tmp_path / "samples.parquet", [("p1", [("46", "policy"), ("47", "policy")])])
    given = []

    def workers(groups, settings, *args):
        given.append(settings.spec)
        raise KeyboardInterrupt  # stop here: what the workers would get is all this test needs

    monkeypatch.setattr(judge_run, "judge_groups_ray", workers)
    with pytest.raises(KeyboardInterrupt):
        run(JudgeConfig.from_options(samples=samples, output=tmp_path / "j.parquet", judge=f"reward:{REWARD_REPO}",
                                     engine="ray"))
    assert given == [f"reward:{REWARD_REPO}@{COMMIT_A}"]


def test_export_renders_with_a_hub_tokenizer(hf_home, tmp_path):
    from conftest import pairs_row, write_example
    from dno_data.stages.export import ExportConfig, run

    pairs = write_example(tmp_path / "pairs.parquet", "pairs", [pairs_row("p1", "a", "b", "46", "47", None)])
    out = run(ExportConfig.from_options(pairs=pairs, output=tmp_path / "dpo.jsonl", string=True, tokenizer=REPO))
    assert json.loads(Path(out).read_text().splitlines()[0])["prompt"] == "1+1="  # the tiny chat template


def test_iterate_pins_a_hub_id_to_one_commit_for_every_stage(hf_home, tmp_path, stage_prompts, monkeypatch):
    """The loop resolves the id once: each stage it composes gets org/name@<commit>, not a moving main."""
    import dno_data.loop as loop
    from dno_data.stages.iterate import IterateConfig, run

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stage_prompts(output=run_dir / "prompts.parquet")
    seen = []
    monkeypatch.setattr(loop, "run_iterations", lambda s, **kw: seen.append(s))  # the composition, not the stages
    monkeypatch.setattr("dno_data.stages.iterate._print_summary", lambda run_dir: None)
    run(IterateConfig.from_options(run=run_dir, model=REPO, judge="oracle:addition", iterations=1))
    (s,) = seen
    configs = loop.iteration_configs(s, 1)
    models = {type(c).__name__: str(c.model) for c in configs if hasattr(c, "model")}
    assert models["SampleConfig"] == models["TrainConfig"] == f"{REPO}@{COMMIT_A}"
