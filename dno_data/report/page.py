"""The report page: one self-contained HTML file (tables, the best iterate, PNGs embedded as base64)
plus the PNGs beside it, written atomically."""

from __future__ import annotations

import base64
import datetime as _dt
import html
from dataclasses import dataclass
from pathlib import Path

from ..errors import DnoError
from ..paths import check_output, write_output
from ..stats import DEFAULT_RESAMPLES, Interval
from .data import METRIC_LABELS, METRICS, Best, RunData, best_iterate, collect_run
from .plots import plot_eval, plot_judge, plot_length_drift, plot_pair_types, plot_training

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;
     padding:0 16px;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:1.8em}
.sub{color:#666;margin-top:4px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}td{white-space:nowrap}th{max-width:9em;vertical-align:bottom}
.wrap{overflow-x:auto}
th{background:#f4f4f4}td.t,th.t{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:6px 0}
.best{background:#eef7ee;border-left:4px solid #3a3;padding:8px 12px}
.noise{background:#fff6e5;border-left:4px solid #e90;padding:8px 12px}
.note{color:#666;font-size:12px}
"""


def _cell(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if round(v, 1) == 0 and abs(v) < 1e-9:
            v = 0.0
        if abs(v) >= 1 or v == 0:
            v = round(v, 1) + 0.0  # no "-0.0"
        return f"{v:,.4g}" if abs(v) < 1 and v != 0 else f"{v:,.1f}" if abs(v) < 1e6 else f"{v:,.0f}"
    return html.escape(str(v))


def html_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return '<p class="note">nothing to show</p>'
    columns = columns or list(rows[0])
    text = lambda v: isinstance(v, str)  # noqa: E731
    head = "".join(f'<th class="{"t" if text(rows[0].get(c)) else ""}">{html.escape(c.replace("_", " "))}</th>' for c in columns)
    body = "".join("<tr>" + "".join(f'<td class="{"t" if text(r.get(c)) else ""}">{_cell(r.get(c))}</td>'
                                    for c in columns) + "</tr>" for r in rows)
    return f'<div class="wrap"><table><tr>{head}</tr>{body}</table></div>'


def _with_run(runs: list[RunData], query: str) -> list[dict]:
    out = []
    for d in runs:
        for r in d.tables[query].to_dicts():
            out.append({"run": d.name, **r} if len(runs) > 1 else r)
    return out


def _fmt_iv(iv: Interval | None, metric: str) -> str | None:
    if iv is None:
        return None
    return iv.fmt(1, 2) if metric == "score" else iv.fmt(100, 1, " %")


def position_rows(runs: list[RunData]) -> list[dict]:
    """position_bias with score judges' positions as columns: one row per iteration and judge."""
    out = {}
    for r in _with_run(runs, "position_bias"):
        key = (r.get("run"), r["iteration"], r["judge"], r["kind"])
        row = out.setdefault(key, {**({"run": r["run"]} if "run" in r else {}), "iteration": r["iteration"],
                                   "judge": r["judge"], "kind": r["kind"], "judgments": 0})
        row["judgments"] += r["judgments"]
        if r["kind"] == "pair":
            row["P(first shown wins)"] = r["p_first_shown_wins"]
        else:
            row[f"mean score shown {r['shown_position'] + 1}."] = r["mean_score"]
    rows = list(out.values())
    cols = list(dict.fromkeys(k for r in rows for k in r))
    return [{c: r.get(c) for c in cols} for r in rows]


def results_rows(runs: list[RunData]) -> list[dict]:
    rows = []
    for d in runs:
        for r in d.results:
            row = {"run": d.name} if len(runs) > 1 else {}
            row.update({"iteration": r.iteration, "checkpoint": r.model, "eval prompts": r.prompts,
                        "judged ok": r.judged_ok,
                        "win-rate vs teacher [95 % CI]": _fmt_iv(r.winrate, "winrate"),
                        "LC win-rate [95 % CI]": _fmt_iv(r.lc_winrate, "lc_winrate"),
                        "length slope": None if r.length_slope is None else round(r.length_slope, 2),
                        "accuracy [95 % CI]": _fmt_iv(r.accuracy, "accuracy") or "n/a",
                        "mean score [95 % CI]": _fmt_iv(r.score, "score")})
            for turn, ivs in r.turns.items():  # a multi-turn eval: each turn beside the figures over all turns
                for metric, label in (("winrate", "win-rate"), ("accuracy", "accuracy"), ("score", "mean score")):
                    if ivs[metric] is not None:
                        row[f"turn {turn} {label} [95 % CI]"] = _fmt_iv(ivs[metric], metric)
            if r.empty_teacher:
                row["empty teacher answers (left out)"] = r.empty_teacher
            rows.append(row)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    return [{c: r.get(c) for c in cols} for r in rows]


def training_rows(runs: list[RunData]) -> list[dict]:
    rows = []
    for d in runs:
        for t, log in sorted(d.train_logs.items()):
            if not log:
                continue
            row = {"run": d.name} if len(runs) > 1 else {}
            row.update({"iteration": t, "steps": len(log), "first loss": log[0].get("loss"),
                        "final loss": log[-1].get("loss"),
                        "final reward accuracy": log[-1].get("reward_accuracy"),
                        "final margin": log[-1].get("margin")})
            rows.append(row)
    return rows


FIGURES = ("eval", "pair_types", "length_drift", "judge", "training")


def png_path(output: Path, key: str) -> Path:
    return output.with_name(f"{output.stem}-{key}.png")


def check_report_output(output: Path) -> None:
    """Before any work: the page and every PNG beside it are new, or an earlier report's
    (dno_data.paths: recognised by their sidecars)."""
    for path in (output, *(png_path(output, key) for key in FIGURES)):
        check_output(path, kind="report")


def _write(path: Path, data: bytes) -> None:
    write_output(path, "report", lambda tmp: tmp.write_bytes(data))


@dataclass
class Report:
    html_path: Path
    pngs: list[Path]
    runs: list[RunData]
    best: Best | None


def write_report(run_dirs: list[Path], output: Path, *, metric: str = "winrate", resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0, cache: Path | None = None, prices: Path | None = None) -> Report:
    if metric not in METRICS:
        raise DnoError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    output = Path(output)
    check_report_output(output)
    runs = [collect_run(r, resamples=resamples, seed=seed, cache=cache, prices=prices) for r in run_dirs]
    names = [d.name for d in runs]
    if len(set(names)) < len(names):  # two runs of one name in different folders
        for d in runs:
            d.name = str(d.path)
    results = [r for d in runs for r in d.results]
    best = best_iterate(results, metric, resamples=resamples, seed=seed)
    figures = {"eval": plot_eval(runs), "pair_types": plot_pair_types(runs), "length_drift": plot_length_drift(runs),
               "judge": plot_judge(runs), "training": plot_training(runs)}
    pngs = {}
    for key, data in figures.items():
        if data is not None:
            path = png_path(output, key)
            _write(path, data)
            pngs[key] = (path, data)

    def img(key: str, alt: str) -> str:
        if key not in pngs:
            return ""
        b64 = base64.b64encode(pngs[key][1]).decode()
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'

    costs = [({"run": d.name} if len(runs) > 1 else {}) | c for d in runs for c in d.costs]
    if not results:
        best_html = ('<p class="noise">No evaluated checkpoint yet: run `dno eval PROMPTS --model CHECKPOINT '
                     '-o RUN/iter-NN/eval.parquet` (iter-00 for the initial policy).</p>')
    elif best is None:
        best_html = ('<p class="noise">No checkpoint has a value for this metric '
                     f'({METRIC_LABELS[metric]}); try --metric {" / ".join(m for m in METRICS if m != metric)}.</p>')
    else:
        best_html = f'<p class="{"noise" if best.within_noise else "best"}">{html.escape(best.sentence())}</p>'
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>DNO report: "
        f"{html.escape(', '.join(d.name for d in runs))}</title><style>{CSS}</style></head><body>",
        f"<h1>DNO report: {html.escape(', '.join(d.name for d in runs))}</h1>",
        f'<p class="sub">{len(results)} evaluated checkpoints in {len(runs)} run(s) · '
        f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC · intervals: percentile bootstrap over eval prompts, "
        f"{resamples} resamples, seed {seed}</p>",
        '<h2 id="results">Held-out results</h2>',
        '<p class="note">Iteration t is the checkpoint trained in iteration t (0: the initial policy). Win-rate: '
        "P(policy ≻ teacher), ties count ½; rows whose teacher answer is empty are left out. LC win-rate: the win "
        "predicted at zero length difference by a logistic regression on tanh(Δlength / sd) (AlpacaEval 2's length "
        "control); length slope &gt; 0 means the judge favours the longer answer. Accuracy: n/a when the judge "
        "does not say what is correct. Mean score: the judge's score of the policy's answer (a 1-10 grade with "
        "--judge-mode single). Multi-turn prompts: each figure over every turn's answer, then per turn.</p>",
        html_table(results_rows(runs)),
        img("eval", "win-rate, LC win-rate, accuracy and score per iteration"),
        '<h2 id="best">Best iterate</h2>', best_html,
        '<h2 id="pair-types">Pair types</h2>',
        '<p class="note">The DNO paper\'s Table 2 view: which pairs each iteration trained on (new pairs; '
        "replayed ones counted apart).</p>",
        html_table(_with_run(runs, "pair_types")), img("pair_types", "pair types per iteration"),
        '<h2 id="length">Length drift</h2>',
        '<p class="note">Mean characters. A growing chosen − rejected gap with a flat LC win-rate means the gain '
        "is length.</p>",
        html_table(_with_run(runs, "length_drift")), img("length_drift", "answer length per iteration"),
        '<h2 id="judge">Judge: position bias and failures</h2>',
        html_table(position_rows(runs)), html_table(_with_run(runs, "failures")),
        img("judge", "position bias and judgment status per iteration"),
    ]
    cycles, agreement = _with_run(runs, "intransitive_cycles"), _with_run(runs, "judge_agreement")
    if cycles:
        parts += ["<h3>Intransitive cycles (A ≻ B ≻ C ≻ A)</h3>", html_table(cycles)]
    if agreement:
        parts += ["<h3>Agreement between judges</h3>", html_table(agreement)]
    parts += ['<h2 id="calls">Judge calls, cache hits and cost</h2>', html_table(_with_run(runs, "judge_calls"))]
    if costs:
        parts += ["<p class='note'>Cost of the calls made (cache hits were paid earlier), from the judge cache's "
                  "token counts and the price table; cost_usd bills the input the provider served from its prompt cache "
                  "(cached_input_tokens) at the cached-input price, cost_usd_without_prefix_reuse all of it at the "
                  "full price.</p>", html_table(costs)]
    else:
        parts.append("<p class='note'>No API calls: the judges were local (oracles, python functions, reward models), "
                     "so nothing was paid.</p>")
    parts += ['<h2 id="training">Training curves</h2>',
              '<p class="note">From each checkpoint\'s train_log.jsonl: loss, reward accuracy (share of pairs '
              "with a positive implicit-reward margin) and the mean margin, per optimizer step.</p>",
              html_table(training_rows(runs)), img("training", "training curves"), "</body></html>"]
    _write(output, "\n".join(parts).encode())
    return Report(output, [p for p, _ in pngs.values()], runs, best)
