"""Multi-turn prompts: MT-Bench's question file and conversations imported with their asked turns;
`dno eval` answers turn after turn, each after the model's own answer, one row per turn; single-answer
grading of each turn against the fake server; `dno report` per turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import FAKE_SERVER_SAFETY, write_jsonl
from dno_data.artifacts import read_artifact
from dno_data.errors import DnoError

# MT-Bench's question.jsonl, in its own shape (question_id, category, turns, and reference for some)
MT_BENCH = [
    {"question_id": 81, "category": "math", "turns": ["12+34", "55+21"], "reference": ["46", "76"]},
    {"question_id": 82, "category": "math", "turns": ["40+7", "3+96"], "reference": ["47", ""]},  # "": none
    {"question_id": 83, "category": "writing", "turns": ["18+18", "70+22"]},
    {"question_id": 84, "category": "writing", "turns": ["61+9"]},
]

JUDGES = '''
SEEN = []

def score(messages, response, reference=None):
    SEEN.append((messages, response, reference))
    return float(len(messages))     # 1 for a first turn, 3 for a second (user, assistant, user)
'''


def import_prompts(tmp_path: Path, rows: list[dict], **kw) -> Path:
    from dno_data.stages.prompts import PromptsConfig, run

    src = write_jsonl(tmp_path / "questions.jsonl", rows)
    return run(PromptsConfig.from_options(src=src, output=tmp_path / "prompts.parquet", **kw))


# ---------------------------------------------------------------- import

def test_mt_bench_question_file_asks_every_turn(tmp_path, capsys):
    rows = read_artifact(import_prompts(tmp_path, MT_BENCH, reference_column="reference"), "prompts").to_pylist()
    by_first = {r["messages"][-1]["content"]: r for r in rows}
    r = by_first["12+34"]
    assert r["messages"] == [{"role": "user", "content": "12+34"}] and r["follow_ups"] == ["55+21"]
    assert r["reference"] == "46" and r["follow_up_references"] == ["76"]
    assert by_first["40+7"]["reference"] == "47" and by_first["40+7"]["follow_up_references"] is None
    assert by_first["18+18"]["reference"] is None and by_first["18+18"]["follow_ups"] == ["70+22"]
    assert by_first["61+9"]["follow_ups"] is None  # one turn: a prompt like any other
    from dno_data.ids import prompt_id

    assert by_first["61+9"]["prompt_id"] == prompt_id([{"role": "user", "content": "61+9"}])
    assert r["prompt_id"] == prompt_id(r["messages"], ["55+21"]) != prompt_id(r["messages"])
    err = capsys.readouterr().err
    assert "turns (every turn asked" in err and "multi-turn prompts" in err


def test_a_conversation_asks_its_last_turn_or_every_turn(tmp_path):
    convo = [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "12+34"},
                                {"from": "gpt", "value": "46"}, {"from": "human", "value": "55+21"},
                                {"from": "gpt", "value": "76"}]}]
    (tmp_path / "last").mkdir()
    (tmp_path / "all").mkdir()
    [last] = read_artifact(import_prompts(tmp_path / "last", convo), "prompts").to_pylist()
    assert [m["role"] for m in last["messages"]] == ["system", "user", "assistant", "user"]  # context, then asked
    assert last["reference"] == "76" and last["follow_ups"] is None
    [every] = read_artifact(import_prompts(tmp_path / "all", convo, ask_turns="all"), "prompts").to_pylist()
    assert every["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "12+34"}]
    assert every["follow_ups"] == ["55+21"] and every["reference"] == "46"
    assert every["follow_up_references"] == ["76"]


@pytest.mark.parametrize("rows, kw, message", [
    ([{"turns": "12+34"}], {}, "expected a list of user turns"),
    ([{"turns": ["12+34", ""]}], {}, "turn 2 is ''"),
    ([{"turns": ["12+34"], "reference": ["46", "76"]}], {"reference_column": "reference"}, "2 reference answers"),
    ([{"prompt": "12+34"}], {"ask_turns": "all"}, "--ask-turns all is for a conversation"),
    ([{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}],
     {"ask_turns": "all"}, "an assistant turn before the first user turn"),
    ([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                    {"role": "assistant", "content": "c"}]}], {"ask_turns": "all"},
     "user turn 1 is followed by assistant, assistant"),
])
def test_bad_multi_turn_input_is_one_error(tmp_path, rows, kw, message):
    with pytest.raises(DnoError, match=message):
        import_prompts(tmp_path, rows, **kw)


def test_the_cli_names_the_row_of_a_bad_turns_cell(tmp_path, cli):
    write_jsonl(tmp_path / "q.jsonl", [{"turns": ["12+34"]}, {"turns": [5]}])
    r = cli("prompts", "q.jsonl", "-o", "p.parquet")
    assert r.returncode == 1 and r.stderr.startswith("error:") and "row 2" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "p.parquet").exists()


# ---------------------------------------------------------------- eval, turn after turn

@pytest.fixture
def mt_prompts(tmp_path, monkeypatch):
    (tmp_path / "mtjudge.py").write_text(JUDGES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return import_prompts(tmp_path, MT_BENCH, reference_column="reference")


def run_eval(tmp_path, prompts, model, name="eval", **kw):
    from dno_data.stages.eval import EvalConfig, run

    kw.setdefault("judge", "python:mtjudge:score")
    kw.setdefault("teacher", None)
    cfg = EvalConfig.from_options(prompts=prompts, model=model, output=tmp_path / f"{name}.parquet", split=None,
                                  max_new_tokens=4, batch_size=3, threads=1, **kw)
    return read_artifact(run(cfg), "eval").to_pylist()


def test_turn_two_sees_the_models_own_turn_one_answer(tmp_path, mt_prompts, tiny_model, tiny_tokenizer):
    import sys

    import torch

    from dno_data.models import load_causal_lm, render_prompt

    rows = run_eval(tmp_path, mt_prompts, tiny_model)
    assert len(rows) == 7  # 3 two-turn prompts and 1 one-turn prompt
    by = {(r["prompt_id"], r["turn"]): r for r in rows}
    firsts = [r for r in rows if r["turn"] == 1]
    assert len(firsts) == 4 and sum(r["turn"] == 2 for r in rows) == 3
    model = load_causal_lm(tiny_model, "float32").eval()
    for second in (r for r in rows if r["turn"] == 2):
        first = by[(second["prompt_id"], 1)]
        # the conversation at turn 2: turn 1, the policy's own answer to it, turn 2
        assert second["messages"][:1] == first["messages"]
        assert second["messages"][1] == {"role": "assistant", "content": first["response"]}
        assert second["messages"][2]["role"] == "user"
        # what the policy answered at turn 2 is its greedy answer to that conversation, and no other
        text = render_prompt(tiny_tokenizer, second["messages"])
        assert text.startswith(render_prompt(tiny_tokenizer, first["messages"]) + first["response"])
        enc = tiny_tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id,
                                 eos_token_id=tiny_tokenizer.eos_token_id)
        expected = tiny_tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        assert second["response"] == expected
        assert second["policy_score"] == 3.0 and first["policy_score"] == 1.0  # the judge saw the conversation
    seen = sys.modules["mtjudge"].SEEN
    refs = {m[-1]["content"]: ref for m, _, ref in seen}
    assert refs["55+21"] == "76" and refs["3+96"] is None and refs["12+34"] == "46"  # each turn's own reference


def test_a_reference_teacher_answers_the_turns_that_have_a_reference(tmp_path, mt_prompts, tiny_model, capsys):
    from dno_data.evaluation import eval_summary

    # --teacher reference needs every first turn's reference (checked before any work); later turns may lack one
    with pytest.raises(DnoError, match="without a reference answer"):
        run_eval(tmp_path, mt_prompts, tiny_model, judge="oracle:addition", teacher="reference")
    keep = [q for q in MT_BENCH if "reference" in q]
    (tmp_path / "ref").mkdir()
    prompts = import_prompts(tmp_path / "ref", keep, reference_column="reference")
    rows = run_eval(tmp_path, prompts, tiny_model, name="ref", judge="oracle:addition", teacher="reference")
    by = {(r["messages"][-1]["content"], r["turn"]): r for r in rows}
    assert by[("55+21", 2)]["teacher_response"] == "76" and by[("3+96", 2)]["teacher_response"] is None
    assert by[("3+96", 2)]["win"] is None and by[("55+21", 2)]["win"] in (0.0, 0.5, 1.0)
    # oracle:addition checks each turn against its own reference; a turn without one is a failure row
    assert all(r["correct"] is not None for r in rows if r is not by[("3+96", 2)])
    assert by[("3+96", 2)]["status"] == "error" and "reference" in by[("3+96", 2)]["error"]
    s = eval_summary(rows, True)
    assert s["prompts"] == 2 and s["answers (every turn)"] == 4 and s["judged ok"] == 3
    assert "turn 1: accuracy" in s and "turn 2: accuracy" in s and "turn 2: mean score [95 % CI]" in s


def test_every_turn_is_graded_in_its_conversation_by_the_single_answer_judge(tmp_path, mt_prompts, tiny_model):
    pytest.importorskip("aiohttp", reason="the fake OpenAI server needs aiohttp")
    from support.fake_openai import FakeOpenAIServer, grade, parse_blocks

    with FakeOpenAIServer(keep_bodies=50, **FAKE_SERVER_SAFETY) as srv:
        rows = run_eval(tmp_path, mt_prompts, tiny_model, judge="openai:m", judge_mode="single",
                        base_url=srv.base_url, cache=tmp_path / "cache.sqlite", timeout=5.0, max_retries=1)
        prompts = [b["messages"][-1]["content"] for b in srv.stats.bodies]
    assert srv.stats.chat_requests == 7  # one grade per turn's answer: no teacher
    for r in rows:
        assert r["status"] == "ok" and r["policy_score"] == grade(r["response"])
        assert r["justification"] == "fake judge: quality as graded."
    second = next(r for r in rows if r["turn"] == 2 and r["messages"][-1]["content"] == "55+21")
    [prompt] = [p for p in prompts if "USER: 55+21" in p]
    assert f"ASSISTANT: {second['messages'][1]['content']}" in prompt and "rate only the assistant's answer" in prompt
    assert "<reference>\n76\n</reference>" in prompt and parse_blocks(prompt)[0][1] == second["response"]


def test_the_report_shows_each_turn_beside_the_figures_over_all_turns(tmp_path, mt_prompts, tiny_model):
    from dno_data.report import collect_run, write_report

    run = tmp_path / "run"
    (run / "iter-00").mkdir(parents=True)
    rows = run_eval(tmp_path, mt_prompts, tiny_model, name="e0", judge="oracle:addition")
    (tmp_path / "e0.parquet").rename(run / "iter-00" / "eval.parquet")
    data = collect_run(run, resamples=200)
    [res] = data.results
    assert res.prompts == 4 and set(res.turns) == {1, 2}
    for turn in (1, 2):
        scores = [r["policy_score"] for r in rows if r["turn"] == turn and r["status"] == "ok"]
        assert res.turns[turn]["score"].value == pytest.approx(sum(scores) / len(scores))
        assert res.turns[turn]["accuracy"] is not None and res.turns[turn]["winrate"] is None
    page = write_report([run], run / "report.html", resamples=200).html_path.read_text()
    assert "turn 1 mean score [95 % CI]" in page and "turn 2 accuracy [95 % CI]" in page


def test_the_summary_per_turn_leaves_out_what_a_turn_does_not_have():
    from dno_data.evaluation import eval_summary

    def row(pid, turn, win, teacher, score):
        return {"prompt_id": pid, "turn": turn, "status": "ok", "win": win, "teacher_response": teacher,
                "correct": None, "policy_score": score}

    s = eval_summary([row("a", 1, 1.0, "t", 8.0), row("a", 2, None, None, 4.0), row("b", 1, 0.0, "t", 6.0)], True)
    assert s["prompts"] == 2 and s["answers (every turn)"] == 3
    assert s["empty teacher answers (left out of the win-rate)"] == 1  # turn 2 had no teacher answer: counted once
    assert s["turn 1: win-rate vs teacher [95 % CI]"].startswith("50.0 %") and "turn 2: win-rate" not in str(s)
    assert s["turn 2: mean score [95 % CI]"].startswith("4.00") and "turn 1: accuracy" not in s
