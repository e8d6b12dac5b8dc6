"""Object storage as the disk: every stage on s3:// paths against a real S3-compatible server on 127.0.0.1
(moto's server mode), the staging mirror, the lease that replaces the file lock, parts written through,
and the one-line errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, S3_SECRET, new_bucket, problem_rows, run_cli, s3_env, write_jsonl
from support.gate import write_gate_module
from dno_data.errors import DnoError

OPENAI_SECRET = "sk-dno-test-SECRET-openai-51d3"


def _ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def _one_error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def _fs():
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)


def _objects(bucket: str) -> dict[str, bytes]:
    fs = _fs()
    return {k: fs.cat_file(k) for k in fs.find(bucket)}


@pytest.fixture
def s3(s3_endpoint, tmp_path, monkeypatch):
    """A fresh bucket; this test process is a machine that reaches it (its own staging mirror)."""
    for k, v in s3_env(s3_endpoint, tmp_path / "machine-a").items():
        monkeypatch.setenv(k, v)
    return f"s3://{new_bucket(s3_endpoint)}"


# ---------------------------------------------------------------- locations

def test_a_url_stays_a_url_in_a_path_option():
    from dno_data.config import to_argv
    from dno_data.run_layout import RunLayout
    from dno_data.stages.judge import JudgeConfig
    from dno_data.stages.report import ReportConfig

    cfg = JudgeConfig.from_options(samples="s3://b/runs/r1/iter-01/samples.parquet",
                                   output="s3://b/runs/r1/iter-01/judgments.parquet", judge="oracle:addition")
    assert cfg.samples == "s3://b/runs/r1/iter-01/samples.parquet"  # a Path would be s3:/b/...
    assert to_argv(cfg)[:3] == ["s3://b/runs/r1/iter-01/samples.parquet", "-o", "s3://b/runs/r1/iter-01/judgments.parquet"]
    layout = RunLayout("s3://b/runs/r1/")
    assert layout.prompts == "s3://b/runs/r1/prompts.parquet"
    assert layout.checkpoint(2) == "s3://b/runs/r1/iter-02/checkpoint"
    assert layout.policy(1, "s3://b/models/sft") == "s3://b/models/sft"
    assert layout.policy(3, "m") == layout.checkpoint(2)
    assert ReportConfig(runs=("s3://b/runs/r1",)).default_output() == "s3://b/runs/r1/report.html"
    with pytest.raises(DnoError, match="--cache .*must be a local path"):
        JudgeConfig.from_options(samples="s.parquet", output="j.parquet", judge="oracle:addition", cache="s3://b/c.sqlite")


def test_staging_paths_map_back_to_their_urls(tmp_path, monkeypatch):
    from dno_data import storage

    monkeypatch.setenv("DNO_CACHE", str(tmp_path / "c"))
    local = storage.local_of("s3://bucket/runs/r1/prompts.parquet")
    assert local == tmp_path / "c" / "objects" / "s3" / "bucket" / "runs" / "r1" / "prompts.parquet"
    assert storage.url_of(local) == "s3://bucket/runs/r1/prompts.parquet"
    assert storage.url_of(tmp_path / "elsewhere.parquet") is None
    assert storage.public({"path": str(local), "files": [f"{local}: no such file", local]}) == {
        "path": "s3://bucket/runs/r1/prompts.parquet",
        "files": ["s3://bucket/runs/r1/prompts.parquet: no such file", "s3://bucket/runs/r1/prompts.parquet"]}
    with pytest.raises(DnoError, match="credentials in a URL are refused") as e:
        storage.split("s3://AKIA:hunter2@bucket/x")
    assert "hunter2" not in str(e.value)


# ---------------------------------------------------------------- the tiny loop on s3://

class Loop:
    def __init__(self, url: str, bucket: str, env: dict, model: str):
        self.url, self.bucket, self.env, self.model = url, bucket, env, model
        self.run = f"{url}/runs/r1"
        self.it = f"{self.run}/iter-01"
        self.printed = ""
        self.ray = {}  # {"engine": "ray", ...}: sample and eval on Ray workers (the second tier's test below)

    def configs(self) -> list:
        from dno_data import api

        r, it = self.run, self.it
        return [
            api.PromptsConfig.from_options(src=f"{self.url}/data/problems.jsonl", output=f"{r}/prompts.parquet",
                                           reference_column="reference", partitions=2, eval_size=4),
            api.SampleConfig.from_options(prompts=f"{r}/prompts.parquet", output=f"{it}/samples.parquet",
                                          model=self.model, partition=1, k=2, max_new_tokens=4, teacher="reference",
                                          batch_size=4, **self.ray),
            api.JudgeConfig.from_options(samples=f"{it}/samples.parquet", output=f"{it}/judgments.parquet",
                                         judge="oracle:addition"),
            api.PairsConfig.from_options(judgments=f"{it}/judgments.parquet", samples=f"{it}/samples.parquet",
                                         output=f"{it}/pairs.parquet"),
            api.TrainConfig.from_options(pairs=f"{it}/pairs.parquet", model=self.model, output=f"{it}/checkpoint",
                                         batch_size=2, learning_rate=1e-3, max_length=32),
            api.EvalConfig.from_options(prompts=f"{r}/prompts.parquet", model=f"{it}/checkpoint",
                                        judge="oracle:addition", max_new_tokens=4, output=f"{it}/eval.parquet",
                                        **self.ray),
        ]


@pytest.fixture(scope="module")
def loop(s3_endpoint, tmp_path_factory, tiny_model):
    """prompts -> sample -> judge -> pairs -> train -> eval through the Python API, every path on s3://, with a
    recognisable secret in AWS_SECRET_ACCESS_KEY and OPENAI_API_KEY."""
    from dno_data import api
    from dno_data.staging import upload

    root = tmp_path_factory.mktemp("s3-loop")
    env = {**s3_env(s3_endpoint, root / "machine-a"), "OPENAI_API_KEY": OPENAI_SECRET}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        bucket = new_bucket(s3_endpoint)
        url = f"s3://{bucket}"
        upload(write_jsonl(root / "problems.jsonl", problem_rows(16)), f"{url}/data/problems.jsonl")
        upload(tiny_model, f"{url}/models/tiny")
        lp = Loop(url, bucket, env, f"{url}/models/tiny")
        lp.results = [api.run(cfg) for cfg in lp.configs()]
        lp.objects = _objects(bucket)
        yield lp


def test_every_stage_reads_and_writes_s3(loop):
    from dno_data.artifacts import read_artifact
    from dno_data.staging import fetch

    assert loop.results == [f"{loop.run}/prompts.parquet"] + [
        f"{loop.it}/{name}" for name in ("samples.parquet", "judgments.parquet", "pairs.parquet", "checkpoint",
                                         "eval.parquet")]
    keys = {k.split("/", 1)[1] for k in loop.objects}
    for name in ("prompts.parquet", "iter-01/samples.parquet", "iter-01/judgments.parquet", "iter-01/pairs.parquet",
                 "iter-01/eval.parquet", "iter-01/checkpoint/model.safetensors",
                 "iter-01/checkpoint/dno-manifest.json", "iter-01/checkpoint/.dno-objects.json",
                 # the training records beside the checkpoint, a folder with its own index
                 "iter-01/checkpoint.records/train_log.jsonl", "iter-01/checkpoint.records/ref_logps.parquet",
                 "iter-01/checkpoint.records/dno-manifest.json", "iter-01/checkpoint.records/.dno-objects.json"):
        assert f"runs/r1/{name}" in keys, sorted(keys)
    assert not [k for k in keys if ".parts/" in k or k.endswith(".lock")], sorted(keys)  # parts and leases gone
    with pytest.MonkeyPatch.context() as mp:
        for k, v in loop.env.items():
            mp.setenv(k, v)
        samples = read_artifact(fetch(f"{loop.it}/samples.parquet"), "samples")
        assert len(samples) == 6 * 3  # the 6 prompts of partition 1, 2 samples and the teacher's answer each
        assert len(read_artifact(fetch(f"{loop.it}/eval.parquet"), "eval")) == 4


def test_lineage_names_the_urls_and_no_staging_path(loop):
    import pyarrow.parquet as pq
    import io

    meta = pq.read_schema(io.BytesIO(loop.objects[f"{loop.bucket}/runs/r1/iter-01/eval.parquet"])).metadata
    lineage = json.loads(meta[b"dno.lineage"])
    assert [i["path"] for i in lineage["inputs"]] == [f"{loop.run}/prompts.parquet", f"{loop.it}/checkpoint"]
    assert lineage["config"]["model"] == f"{loop.it}/checkpoint"
    assert lineage["config"]["output"] == f"{loop.it}/eval.parquet"
    staging_root = loop.env["DNO_CACHE"]
    assert not [k for k, data in loop.objects.items() if staging_root.encode() in data]


def test_no_secret_from_the_environment_reaches_the_bucket(loop):
    """Every object written (artifacts, checkpoint, manifests, indexes) is scanned for the environment's secrets."""
    assert loop.objects
    for secret in (S3_SECRET, OPENAI_SECRET, loop.env["AWS_ACCESS_KEY_ID"]):
        found = [k for k, data in loop.objects.items() if secret.encode() in data]
        assert not found, (secret, found)


def test_another_machine_finds_every_stage_up_to_date(loop, tmp_path, capsys):
    """A fresh staging mirror (another machine): the same configs download what they need and rewrite nothing."""
    from dno_data import api

    before = {k: v.get("ETag") for k, v in _fs().find(loop.bucket, detail=True).items()}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {**loop.env, "DNO_CACHE": str(tmp_path / "machine-b")}.items():
            mp.setenv(k, v)
        for cfg in loop.configs():
            api.run(cfg)
    err = capsys.readouterr().err
    assert err.count("up to date") == 6, err
    assert f"{loop.it}/samples.parquet: up to date" in err  # named by its URL, not its staging path
    assert {k: v.get("ETag") for k, v in _fs().find(loop.bucket, detail=True).items()} == before


def test_dno_sql_over_an_s3_run_and_its_lockdown(loop, tmp_path):
    """DuckDB reads the run's local copies: no extension, no URL, nothing outside the run's artifacts."""
    from dno_data import api

    env = {**loop.env, "DNO_CACHE": str(tmp_path / "machine-c")}
    proc = _ok(run_cli("sql", "--run", loop.run, "--format", "csv",
                       "SELECT iteration, source, count(*) AS n FROM samples GROUP BY ALL ORDER BY ALL", cwd=tmp_path,
                       env=env))
    assert proc.stdout.splitlines() == ["iteration,source,n", "1,policy,12", "1,teacher,6"]
    (tmp_path / "outside.csv").write_text("secret\n42\n")
    line = _one_error_line(run_cli("sql", "--run", loop.run, f"SELECT * FROM read_csv('{tmp_path / 'outside.csv'}')",
                                   cwd=tmp_path, env=env))
    assert "query failed" in line and "secret" not in line, line
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        for query in (f"SELECT * FROM read_parquet('{loop.run}/prompts.parquet')",  # no httpfs, no URL
                      f"SELECT * FROM read_parquet('{tmp_path / 'machine-c'}/objects/**/*.parquet')",  # nor a glob
                      f"SELECT * FROM read_parquet('{tmp_path / 'machine-c'}/objects/s3/{loop.bucket}/data/"
                      "problems.jsonl')"):
            with pytest.raises(DnoError, match="query failed"):
                api.sql(api.SqlConfig(run=loop.run, query=query))


def test_dno_report_over_an_s3_run(loop, tmp_path):
    from dno_data import api

    with pytest.MonkeyPatch.context() as mp:
        for k, v in {**loop.env, "DNO_CACHE": str(tmp_path / "machine-d")}.items():
            mp.setenv(k, v)
        out = api.report(api.ReportConfig(runs=(loop.run,), resamples=10))
    assert out == f"{loop.run}/report.html"
    keys = set(_fs().find(f"{loop.bucket}/runs/r1", maxdepth=1))
    assert f"{loop.bucket}/runs/r1/report.html" in keys and f"{loop.bucket}/runs/r1/.report.html.dno.json" in keys
    assert any(k.endswith(".png") for k in keys)
    assert "final reward accuracy" in _fs().cat_file(f"{loop.bucket}/runs/r1/report.html").decode()  # records read


# ---------------------------------------------------------------- a reader never sees a half-written artifact

def test_a_checkpoint_whose_upload_stopped_part_way_is_refused(s3, tiny_model, tmp_path, monkeypatch):
    """A folder goes up as its objects, then its index: a reader on another machine refuses it until the index
    is there (its old index is removed before the first object of the new upload)."""
    import shutil

    from dno_data import staging, storage

    checkpoint = Path(shutil.copytree(tiny_model, tmp_path / "checkpoint"))
    (checkpoint / "dno-manifest.json").write_text(json.dumps({"lineage": {"stage": "train"}}))
    url = f"{s3}/runs/r1/iter-01/checkpoint"
    staging.upload(checkpoint, url)
    fs = storage.filesystem(url)
    real_put = fs.put

    def put_then_die(lpaths, rpaths, **kw):  # the uploading machine dies half way through
        real_put(lpaths[: len(lpaths) // 2], rpaths[: len(rpaths) // 2], **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(fs, "put", put_then_die)
    with pytest.raises(KeyboardInterrupt):
        staging.upload(checkpoint, url)
    monkeypatch.setattr(fs, "put", real_put)
    monkeypatch.setenv("DNO_CACHE", str(tmp_path / "machine-b"))
    with pytest.raises(DnoError, match="still writing, or whose upload stopped part way"):
        staging.fetch(url)
    staging.upload(checkpoint, url)  # the rerun completes it
    assert (staging.fetch(url) / "model.safetensors").exists()


def test_a_folder_whose_objects_are_not_its_index_is_refused(s3, tiny_model):
    from dno_data import staging

    url = f"{s3}/models/tiny"
    staging.upload(tiny_model, url)
    assert (staging.fetch(url) / "config.json").exists()
    _fs().pipe_file(f"{url[5:]}/config.json", b"{}")  # a writer that has not reached the index yet
    with pytest.raises(DnoError, match="being written"):
        staging.fetch(url)


def test_a_killed_sample_resumes_on_another_machine(s3, tmp_path, tiny_model, monkeypatch):
    """Parts go to the bucket as they are written; the output object appears only when complete; a rerun with
    another staging mirror takes the finished parts and samples only the rest."""
    import dno_data.generation.hf as generation
    from dno_data import api
    from dno_data.artifacts import read_artifact
    from dno_data.staging import fetch, upload

    src = write_jsonl(tmp_path / "problems.jsonl", problem_rows(16))
    upload(src, f"{s3}/problems.jsonl")
    api.prompts(api.PromptsConfig.from_options(src=f"{s3}/problems.jsonl", output=f"{s3}/prompts.parquet",
                                               reference_column="reference"))

    def cfg(out):
        return api.SampleConfig.from_options(prompts=f"{s3}/prompts.parquet", output=f"{s3}/{out}", model=tiny_model,
                                             k=2, max_new_tokens=4, batch_size=4, teacher="reference")

    real = generation.HFGenerator.generate
    calls = []

    def crash_after_two(self, prompts, params, seed, **kw):
        calls.append(seed)
        if len(calls) > 2:
            raise KeyboardInterrupt  # killed
        return real(self, prompts, params, seed, **kw)

    monkeypatch.setattr(generation.HFGenerator, "generate", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        api.sample(cfg("b.parquet"))
    keys = sorted(k.split("/", 1)[1] for k in _fs().find(s3[5:]))
    assert "b.parquet" not in keys  # never a half-written artifact
    assert [k for k in keys if k.startswith("b.parquet.parts/")] == [
        "b.parquet.parts/fingerprint.json", "b.parquet.parts/part-000000.parquet",
        "b.parquet.parts/part-000001.parquet"]
    assert ".b.parquet.lock" not in keys  # the lease went with the command

    monkeypatch.setenv("DNO_CACHE", str(tmp_path / "machine-b"))
    calls.clear()
    def counted(self, *a, **kw):
        calls.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(generation.HFGenerator, "generate", counted)
    api.sample(cfg("b.parquet"))
    assert len(calls) == 2  # only the two unfinished batches
    monkeypatch.setattr(generation.HFGenerator, "generate", real)
    api.sample(cfg("a.parquet"))  # uninterrupted
    a, b = (read_artifact(fetch(f"{s3}/{n}"), "samples").sort_by("sample_id") for n in ("a.parquet", "b.parquet"))
    assert a.select(["sample_id", "response"]).equals(b.select(["sample_id", "response"]))
    assert not [k for k in _fs().find(s3[5:]) if ".parts/" in k]


# ---------------------------------------------------------------- one writer per output: the lease

def test_two_writers_on_one_s3_output(s3, tmp_path):
    """Two machines (two staging mirrors) judge into one s3:// output at once: one is refused with one line naming
    the holder; the other writes every row and its lease goes with it."""
    from dno_data import api
    from dno_data.staging import fetch, upload

    upload(write_jsonl(tmp_path / "problems.jsonl", problem_rows(16)), f"{s3}/problems.jsonl")
    api.prompts(api.PromptsConfig.from_options(src=f"{s3}/problems.jsonl", output=f"{s3}/prompts.parquet",
                                               reference_column="reference"))
    api.sample(api.SampleConfig.from_options(prompts=f"{s3}/prompts.parquet", output=f"{s3}/samples.parquet",
                                             teacher="reference"))
    write_gate_module(tmp_path)
    out = f"{s3}/judgments.parquet"
    args = [sys.executable, "-m", "stages.cli", "judge", f"{s3}/samples.parquet", "-o", out, "--judge",
            "python:gate:score", "--prompts-per-part", "4"]
    procs = []
    for machine in ("m1", "m2"):
        env = {**os.environ, "DNO_CACHE": str(tmp_path / machine), "DNO_TEST_GATE": str(tmp_path / "gate"),
               "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
        procs.append(subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    try:
        deadline = time.monotonic() + 120
        while not any(p.poll() is not None for p in procs):
            assert time.monotonic() < deadline, "neither judge ended"
            time.sleep(0.05)
        (tmp_path / "gate" / "go").touch()
        results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert sorted(r[0] for r in results) == [0, 1], results
    loser = next(r for r in results if r[0] == 1)
    line = _one_error_line(subprocess.CompletedProcess(args, 1, loser[1], loser[2]))
    assert out in line and "another dno process (pid " in line, line
    assert len(fetch(out).read_bytes()) and not [k for k in _fs().find(s3[5:]) if k.endswith(".lock")]


def test_a_lapsed_lease_is_taken_over_and_its_holder_uploads_nothing(s3):
    from dno_data.object_lease import Lease

    live = Lease(f"{s3}/x.parquet")
    live.acquire()
    with pytest.raises(DnoError, match=r"another dno process \(pid \d+ on .*\) is writing this output right now"):
        Lease(f"{s3}/x.parquet").acquire()
    live.release()

    stalled = Lease(f"{s3}/y.parquet", ttl=0.5)
    stalled.acquire()
    stalled._stop.set()  # its heartbeat stops, as in a process that hangs (or a machine that is gone)
    stalled._thread.join()
    time.sleep(1.2)  # ages are measured by the store's clock, in whole seconds
    taker = Lease(f"{s3}/y.parquet", ttl=60)
    taker.acquire()
    assert stalled._store.replace(stalled._body(), stalled.etag) is None  # its renewal fails: lost
    stalled.lost = True
    with pytest.raises(DnoError, match="lost its lease"):
        stalled.check()
    stalled.release()  # never deletes the taker's lease
    assert _fs().exists(f"{s3[5:]}/.y.parquet.lock")
    taker.release()
    assert not _fs().exists(f"{s3[5:]}/.y.parquet.lock")


def test_another_rank_of_a_launch_neither_leases_nor_uploads(s3, tmp_path, prompts_jsonl, monkeypatch):
    """Under torchrun / accelerate launch every rank runs the command and only the main process writes the
    checkpoint: the others work on the same local copies, take no lease and upload nothing."""
    from dno_data import api
    from dno_data.object_lease import Lease
    from dno_data.staging import upload

    upload(prompts_jsonl, f"{s3}/problems.jsonl")
    held = Lease(f"{s3}/prompts.parquet")
    held.acquire()  # as rank 0 would
    monkeypatch.setenv("RANK", "1")
    try:
        out = api.prompts(api.PromptsConfig.from_options(src=f"{s3}/problems.jsonl", output=f"{s3}/prompts.parquet"))
    finally:
        held.release()
    assert out == f"{s3}/prompts.parquet" and not _fs().exists(f"{s3[5:]}/prompts.parquet")


# ---------------------------------------------------------------- one-line errors

def test_storage_errors_are_one_line(s3, tmp_path):
    from dno_data import api

    def judge(samples, output):
        return api.judge(api.JudgeConfig.from_options(samples=samples, output=output, judge="oracle:addition"))

    with pytest.raises(DnoError) as e:
        judge("s3://dno-no-such-bucket/s.parquet", "s3://dno-no-such-bucket/j.parquet")
    assert str(e.value).startswith("s3://dno-no-such-bucket/j.parquet: no such bucket 'dno-no-such-bucket'"), e.value
    with pytest.raises(DnoError) as e:
        judge(f"{s3}/missing.parquet", f"{s3}/j.parquet")
    assert str(e.value).startswith(f"{s3}/missing.parquet: no such file; make it with `dno sample"), e.value
    with pytest.raises(DnoError, match="credentials in a URL are refused") as e:
        judge("s3://me:hunter2@bucket/s.parquet", f"{s3}/j.parquet")
    assert "hunter2" not in str(e.value)
    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") or k == "AWS_ENDPOINT_URL"}
    bare.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
                AWS_EC2_METADATA_DISABLED="true", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "stages.cli", "judge", f"{s3}/s.parquet", "-o", f"{s3}/j.parquet",
                           "--judge", "oracle:addition"], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env=bare)
    line = _one_error_line(proc)
    assert line.startswith(f"error: {s3}/j.parquet: no credentials for object storage") and "AWS_ACCESS_KEY_ID" in line


def test_without_the_storage_packages_a_url_is_one_line_naming_the_extra(tmp_path, prompts_jsonl):
    """The quickstart needs none of them: local paths work with s3fs, fsspec and boto3 unimportable."""
    hide = "import sys; sys.modules.update(dict.fromkeys(['s3fs', 'fsspec', 'boto3', 'botocore', 'gcsfs', 'adlfs']))"
    code = f"{hide}; from stages.cli import main; main()"

    def dno(*args):
        return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                              cwd=tmp_path, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})

    _ok(dno("prompts", prompts_jsonl, "-o", tmp_path / "prompts.parquet"))
    line = _one_error_line(dno("prompts", prompts_jsonl, "-o", "s3://bucket/prompts.parquet"))
    assert line == ("error: s3://bucket/prompts.parquet: object storage needs the s3fs package, which is not "
                    "installed; install it with: pip install 'dno-data[ray]'"), line


# ---------------------------------------------------------------- dno iterate --run s3://

@pytest.mark.e2e
def test_iterate_over_an_s3_run(s3, tmp_path, tiny_model):
    """One tiny iteration of `dno iterate --run s3://...`, each stage its own process staging its own files."""
    from dno_data.staging import upload

    upload(tiny_model, f"{s3}/models/tiny")
    upload(write_jsonl(tmp_path / "problems.jsonl", problem_rows(16)), f"{s3}/problems.jsonl")
    env = dict(os.environ)
    run = f"{s3}/runs/r1"
    _ok(run_cli("prompts", f"{s3}/problems.jsonl", "-o", f"{run}/prompts.parquet", "--reference-column", "reference",
                "--eval-size", "4", cwd=tmp_path, env=env))
    args = ("iterate", "--run", run, "--model", f"{s3}/models/tiny", "--judge", "oracle:addition", "--iterations", "1",
            "--sample-args", "-k 2 --max-new-tokens 4 --batch-size 4",
            "--train-args", "--batch-size 2 --learning-rate 1e-3 --max-length 32", "--eval-args", "--max-new-tokens 4")
    proc = _ok(run_cli(*args, cwd=tmp_path, env=env))
    assert f"$ dno sample {run}/prompts.parquet -o {run}/iter-01/samples.parquet" in proc.stderr
    keys = {k.split("/", 1)[1] for k in _fs().find(s3[5:])}
    assert {"runs/r1/iter-01/eval.parquet", "runs/r1/iter-01/checkpoint/.dno-objects.json"} <= keys
    assert f"{run}: per iteration" in proc.stderr  # the summary, from the run's local copy


@pytest.mark.e2e
def test_the_loop_on_s3_with_ray_workers(s3_endpoint, tmp_path, tiny_model):
    """The same loop with sample and eval on Ray workers (a local cluster), which fetch the s3:// models
    themselves: the same rows as the local engine's loop, and no secret in any object."""
    pytest.importorskip("ray")
    from dno_data import api
    from dno_data.artifacts import read_artifact
    from dno_data.engines.ray import local_cluster_only
    from dno_data.staging import fetch, upload

    local_cluster_only()
    env = {**s3_env(s3_endpoint, tmp_path / "machine-a"), "OPENAI_API_KEY": OPENAI_SECRET}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("RAY_ADDRESS", raising=False)
        rows = {}
        for name, ray in (("local", {}), ("ray", {"engine": "ray", "workers": 2})):
            bucket = new_bucket(s3_endpoint)
            url = f"s3://{bucket}"
            upload(write_jsonl(tmp_path / "problems.jsonl", problem_rows(16)), f"{url}/data/problems.jsonl")
            upload(tiny_model, f"{url}/models/tiny")
            lp = Loop(url, bucket, env, f"{url}/models/tiny")
            lp.ray = ray
            for cfg in lp.configs():
                api.run(cfg)
            rows[name] = [sorted(({k: v.replace(url, "URL") if isinstance(v, str) else v for k, v in r.items()}
                                  for r in read_artifact(fetch(f"{lp.it}/{f}"), schema).to_pylist()),
                                 key=lambda r: str(r[key]))  # each run has its own bucket: URL columns differ
                          for f, schema, key in (("samples.parquet", "samples", "sample_id"),
                                                 ("eval.parquet", "eval", "prompt_id"))]
            objects = _objects(bucket)
            for secret in (S3_SECRET, OPENAI_SECRET, env["AWS_ACCESS_KEY_ID"]):
                assert not [k for k, data in objects.items() if secret.encode() in data], (name, secret)
    assert len(rows["ray"][0]) == 6 * 3 and len(rows["ray"][1]) == 4
    assert rows["ray"] == rows["local"]
