"""`--engine ray`: a stage's batches on Ray actors of a real local cluster (2 nodes on 127.0.0.1).
The tests that start the cluster are in the second tier (`pytest -m e2e`): about a minute together.

The cluster: `ray.cluster_utils.Cluster`, a head with no CPUs (it schedules nothing) and two worker
nodes of 2 logical CPUs each, so two 1-CPU actors land on different nodes (SPREAD) while each node
still has room for a replacement. Logical CPUs are a reservation, not cores: 4 on this 2-core machine.
"""

from __future__ import annotations

import os

import pytest

from dno_data.artifacts import read_artifact
from dno_data.errors import DnoError

from conftest import problem_rows, write_jsonl

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    from ray.cluster_utils import Cluster

    from dno_data.engines.ray import local_cluster_only

    local_cluster_only()  # nodes and drivers on 127.0.0.1 only

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1"})
    nodes = [cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1") for _ in range(2)]
    cluster.wait_for_nodes()
    old = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = cluster.address
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()
    if old is None:
        os.environ.pop("RAY_ADDRESS", None)
    else:
        os.environ["RAY_ADDRESS"] = old


@pytest.fixture
def prompts24(tmp_path):
    from dno_data.stages.prompts import PromptsConfig, run

    rows = problem_rows(16) + [{"prompt": f"{a}+{a + 1}", "reference": str(2 * a + 1)} for a in range(8)]
    src = write_jsonl(tmp_path / "problems.jsonl", rows)
    return run(PromptsConfig.from_options(src=src, output=tmp_path / "prompts.parquet", reference_column="reference"))


def _rows(path, schema, key):
    return sorted(read_artifact(path, schema).to_pylist(), key=lambda r: r[key])


@pytest.mark.e2e
def test_sample_on_ray_equals_local(tmp_path, prompts24, tiny_model, ray_cluster):
    """Same rows, keys and texts as the local engine: each prompt's samples are seeded by its key."""
    from dno_data.stages.sample import SampleConfig, run

    base = dict(prompts=prompts24, model=tiny_model, k=3, max_new_tokens=6, batch_size=4, teacher="reference",
                temperature=1.0, threads=1)
    local = run(SampleConfig.from_options(output=tmp_path / "local.parquet", **base))
    remote = run(SampleConfig.from_options(output=tmp_path / "ray.parquet", engine="ray", workers=2, **base))
    a, b = _rows(local, "samples", "sample_id"), _rows(remote, "samples", "sample_id")
    assert len(a) == 24 * 4 and [r["sample_id"] for r in a] == [r["sample_id"] for r in b]
    assert a == b  # every column: texts, token counts, finish reasons, repetition
    assert len({r["response"] for r in a if r["source"] == "policy"}) > 10  # really sampled


@pytest.mark.e2e
def test_judge_on_ray_equals_local(tmp_path, prompts24, tiny_model, ray_cluster):
    from dno_data.stages.judge import JudgeConfig, run as judge
    from dno_data.stages.sample import SampleConfig, run as sample

    samples = sample(SampleConfig.from_options(prompts=prompts24, output=tmp_path / "s.parquet", model=tiny_model, k=2,
                                               max_new_tokens=4, teacher="reference", threads=1))
    base = dict(samples=samples, judge="oracle:addition", prompts_per_part=5)
    local = judge(JudgeConfig.from_options(output=tmp_path / "local.parquet", **base))
    remote = judge(JudgeConfig.from_options(output=tmp_path / "ray.parquet", engine="ray", workers=2, **base))
    a, b = _rows(local, "judgments", "judgment_id"), _rows(remote, "judgments", "judgment_id")
    assert len(a) == 24 * 3 and a == b


@pytest.mark.e2e
def test_worker_error_is_one_line(tmp_path, prompts24, ray_cluster, monkeypatch):
    """An error raised by the work itself on a worker stops the stage with its own line, not a traceback,
    and leaves nothing that would refuse the corrected command."""
    from dno_data.stages.sample import SampleConfig, run

    (tmp_path / "bad_teacher.py").write_text("def answer(messages):\n    raise ValueError('no answer for you')\n")
    monkeypatch.chdir(tmp_path)  # workers import python: specs from the driver's working folder
    cfg = SampleConfig.from_options(prompts=prompts24, output=tmp_path / "t.parquet", teacher="python:bad_teacher:answer",
                                    engine="ray", workers=2)
    with pytest.raises(DnoError, match=r"--teacher python:bad_teacher:answer: raised ValueError: no answer for you"):
        run(cfg)
    assert not (tmp_path / "t.parquet.parts").exists()


def test_api_judge_stays_in_the_driver(tmp_path, prompts24, tiny_model):
    from dno_data.stages.judge import JudgeConfig, run as judge
    from dno_data.stages.sample import SampleConfig, run as sample

    samples = sample(SampleConfig.from_options(prompts=prompts24, output=tmp_path / "s.parquet", teacher="reference"))
    with pytest.raises(DnoError, match="an API judge runs in this process"):
        judge(JudgeConfig.from_options(samples=samples, output=tmp_path / "j.parquet", judge="openai:gpt-4o",
                                       engine="ray"))


@pytest.mark.e2e
def test_no_room_for_a_worker_is_one_line(tmp_path, prompts24, tiny_model, ray_cluster):
    from dno_data.stages.sample import SampleConfig, run

    cfg = SampleConfig.from_options(prompts=prompts24, output=tmp_path / "t.parquet", model=tiny_model, k=1,
                                    max_new_tokens=2, engine="ray", gpus_per_worker=1)
    with pytest.raises(DnoError, match=r"no node of the cluster has 1 CPU and 1 GPU free for one worker"):
        run(cfg)


@pytest.mark.e2e
def test_eval_on_ray_equals_local(tmp_path, prompts24, tiny_model, ray_cluster):
    """Greedy answers judged on the workers (oracle, reference teacher): the same rows as locally."""
    from dno_data.stages.eval import EvalConfig, run

    base = dict(prompts=prompts24, model=tiny_model, judge="oracle:addition", split="all", max_new_tokens=4,
                batch_size=5, threads=1)
    local = run(EvalConfig.from_options(output=tmp_path / "local.parquet", **base))
    remote = run(EvalConfig.from_options(output=tmp_path / "ray.parquet", engine="ray", workers=2, **base))
    a, b = _rows(local, "eval", "prompt_id"), _rows(remote, "eval", "prompt_id")
    assert len(a) == 24 and a == b


@pytest.mark.e2e
def test_multi_turn_eval_on_ray_with_a_judge_in_the_driver(tmp_path, tiny_model, ray_cluster):
    """Two-turn prompts answered on the workers (turn 2 after the model's own turn-1 answer), graded by an
    openai: judge that the driver asks, with its call cache: the same rows as locally."""
    pytest.importorskip("aiohttp", reason="the fake OpenAI server needs aiohttp")
    from support.fake_openai import FakeOpenAIServer
    from test_multiturn import FAKE_SERVER_SAFETY, MT_BENCH, import_prompts

    from dno_data.stages.eval import EvalConfig, run

    prompts = import_prompts(tmp_path, MT_BENCH, reference_column="reference")
    with FakeOpenAIServer(**FAKE_SERVER_SAFETY) as srv:
        base = dict(prompts=prompts, model=tiny_model, judge="openai:m", judge_mode="single", teacher=None, split=None,
                    max_new_tokens=4, batch_size=1, threads=1, base_url=srv.base_url, timeout=5.0, max_retries=1)
        local = run(EvalConfig.from_options(output=tmp_path / "local.parquet", cache=tmp_path / "a.sqlite", **base))
        remote = run(EvalConfig.from_options(output=tmp_path / "ray.parquet", cache=tmp_path / "b.sqlite",
                                             engine="ray", workers=2, **base))
    key = lambda r: (r["prompt_id"], r["turn"])  # noqa: E731
    a = sorted(read_artifact(local, "eval").to_pylist(), key=key)
    b = sorted(read_artifact(remote, "eval").to_pylist(), key=key)
    assert {r["turn"] for r in a} == {1, 2} and all(r["status"] == "ok" for r in a) and a == b


def test_without_ray_installed_it_is_one_line(tmp_path, prompts24, monkeypatch):
    import sys

    from dno_data.stages.sample import SampleConfig, run

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    with pytest.raises(DnoError, match=r"--engine ray needs Ray: pip install 'dno-data\[ray\]'"):
        run(SampleConfig.from_options(prompts=prompts24, output=tmp_path / "t.parquet", teacher="reference",
                                      engine="ray"))
    assert not (tmp_path / "t.parquet.parts").exists()


def test_workers_get_the_model_loading_options(tmp_path, prompts24, tiny_model, monkeypatch):
    """What a worker builds is what the local engine builds: --dtype and --threads reach it."""
    import dno_data.evaluation as evaluation
    import dno_data.sampling as sampling
    from dno_data.stages.eval import EvalConfig, run as evaluate
    from dno_data.stages.sample import SampleConfig, run as sample

    seen = {}

    class Stop(Exception):
        pass

    def capture(name):
        def fake(*args, worker, **kw):
            seen[name] = worker
            raise Stop
        return fake

    monkeypatch.setattr(sampling, "sample_rows_ray", capture("sample"))
    monkeypatch.setattr(evaluation, "evaluate_rows_ray", capture("eval"))
    opts = dict(model=tiny_model, dtype="float32", threads=2, engine="ray")
    with pytest.raises(Stop):
        sample(SampleConfig.from_options(prompts=prompts24, output=tmp_path / "s.parquet", k=1, **opts))
    with pytest.raises(Stop):
        evaluate(EvalConfig.from_options(prompts=prompts24, output=tmp_path / "e.parquet", judge="oracle:addition",
                                         split="all", **opts))
    assert seen["sample"].options["dtype"] == "float32" and seen["sample"].options["threads"] == 2
    assert seen["eval"].options == {"dtype": "float32", "threads": 2}
    assert seen["eval"].judge is not None and seen["eval"].teacher == "reference"  # judged on the workers


def test_a_worker_s_rows_are_checked_before_they_are_written():
    """The driver refuses a batch holding another batch's prompt or a key twice (nothing of it is written)."""
    from dno_data.engines import check_unit_rows, resumed_items

    rows = [{"prompt_id": "a", "sample_id": "s1"}, {"prompt_id": "b", "sample_id": "s2"}]
    check_unit_rows(rows, {"a", "b"}, 3, unique="sample_id")
    with pytest.raises(DnoError, match="batch 3: a worker returned a row of prompt b, which is not in that batch"):
        check_unit_rows(rows, {"a"}, 3)
    with pytest.raises(DnoError, match="batch 3: a worker returned sample_id s1 twice"):
        check_unit_rows(rows + [{"prompt_id": "a", "sample_id": "s1"}], {"a", "b"}, 3, unique="sample_id")
    assert resumed_items([[1, 2], [3], [4, 5]], [0, 2]) == 1


def test_a_local_cluster_is_a_new_one_on_loopback(monkeypatch):
    """Without RAY_ADDRESS: Ray keeps 127.0.0.1 as it is (even when imported first), and dno starts a cluster of
    its own (address="local") rather than joining any Ray instance running on the machine."""
    from ray._private import ray_constants, services

    from dno_data.engines import ray as engine

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)  # as when Ray was imported before the variable
    engine._ray()
    assert services.get_node_ip_address() == "127.0.0.1"
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    engine.connect(2, 0)
    assert calls and calls[0]["address"] == "local" and calls[0]["_node_ip_address"] == "127.0.0.1"
