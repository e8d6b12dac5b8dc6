"""`dno report RUN [RUN...]`: what DNO did, as one self-contained HTML page plus its PNGs.

Per iteration (and per run): win-rate against the teacher, length-controlled win-rate,
accuracy and mean score, each with a bootstrap 95 % interval; the best iterate by a chosen
metric and whether its lead is within noise; pair types; length drift; the judge's position
bias, failures, calls, cache hits and cost; the training curves from each checkpoint's
train_log.jsonl. The numbers come from the canned queries (dno_data/sql/queries) and
dno_data.stats; plots are matplotlib PNGs, embedded as base64 (no network, no scripts).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DnoError
from .queries import open_run_all_views, run_query
from .duckdb_sql import load_sql, query_polars
from .stats import DEFAULT_RESAMPLES, Interval, bootstrap_ci, lc_winrate_ci, paired_bootstrap

METRICS = ("winrate", "lc_winrate", "accuracy", "score")
METRIC_LABELS = {"winrate": "win-rate vs teacher", "lc_winrate": "LC win-rate", "accuracy": "accuracy",
                 "score": "mean score"}
PER_PROMPT = {"winrate": "win", "accuracy": "correct", "score": "score"}  # metrics a paired bootstrap can compare
TABLE_QUERIES = ("winrate", "pair_types", "length_drift", "position_bias", "failures", "intransitive_cycles",
                 "judge_agreement", "judge_calls")


@dataclass
class IterationResult:
    run: str
    iteration: int
    model: str
    prompts: int
    judged_ok: int
    empty_teacher: int
    winrate: Interval | None = None
    lc_winrate: Interval | None = None
    length_slope: float | None = None
    accuracy: Interval | None = None
    score: Interval | None = None
    per_prompt: dict = field(default_factory=dict)  # "win" | "correct" | "score" -> {prompt_id: value}

    @property
    def label(self) -> str:
        return f"{self.run} iteration {self.iteration}"


@dataclass
class RunData:
    path: Path
    name: str
    results: list[IterationResult]
    tables: dict  # canned query name -> polars DataFrame
    train_logs: dict  # iteration -> list of train_log.jsonl rows
    costs: list[dict]  # per iteration and judge model: tokens and cost of the calls made


@dataclass
class Best:
    metric: str
    best: IterationResult
    interval: Interval
    runner_up: IterationResult | None
    runner_up_interval: Interval | None
    within_noise: bool | None
    how: str  # how "within noise" was decided

    def sentence(self) -> str:
        unit = "" if self.metric == "score" else " %"
        scale = 1 if self.metric == "score" else 100
        digits = 2 if self.metric == "score" else 1
        text = (f"Best iterate by {METRIC_LABELS[self.metric]}: {self.best.label} ({self.best.model}), "
                f"{self.interval.fmt(scale, digits, unit)}.")
        if self.runner_up is None:
            return text + " No other checkpoint was evaluated."
        other = f"{self.runner_up.label} ({self.runner_up_interval.fmt(scale, digits, unit)})"
        if self.within_noise:
            return text + f" The difference to the next, {other}, is within noise ({self.how}): either could ship."
        return text + f" It is ahead of the next, {other}, beyond noise ({self.how})."


# ---------------------------------------------------------------- collecting

def collect_run(run: Path, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, cache: Path | None = None,
                prices: Path | None = None) -> RunData:
    run = Path(run)
    con = open_run_all_views(run)
    name = run.resolve().name
    tables = {q: run_query(None, q, con=con) for q in TABLE_QUERIES}
    evals = query_polars(con, load_sql("report_eval_rows"))
    results = [_iteration_result(name, run, t, evals.filter(evals["iteration"] == t), resamples, seed)
               for t in sorted(set(evals["iteration"].to_list()))]
    calls = query_polars(con, load_sql("report_paid_calls"))
    return RunData(run, name, results, tables, read_train_logs(run), judge_costs(run, calls, cache, prices))


def _short_model(model: str, run_dir: Path) -> str:
    """A checkpoint inside the run's parent folder is named relative to it (demo/iter-01/checkpoint)."""
    try:
        return str(Path(model).resolve().relative_to(run_dir.resolve().parent))
    except (ValueError, OSError):
        return model


def _iteration_result(run: str, run_dir: Path, t: int, df, resamples: int, seed: int) -> IterationResult:
    rows = df.to_dicts()
    ok = [r for r in rows if r["status"] == "ok"]
    with_teacher = [r for r in ok if r["win"] is not None and (r["teacher_response"] or "").strip()]
    graded = [r for r in ok if r["correct"] is not None]
    scored = [r for r in ok if r["policy_score"] is not None]
    res = IterationResult(run, t, _short_model(rows[0]["model"], run_dir), len(rows), len(ok),
                          sum(1 for r in ok if r["teacher_response"] is not None and not r["teacher_response"].strip()))
    res.per_prompt = {"win": {r["prompt_id"]: r["win"] for r in with_teacher},
                      "correct": {r["prompt_id"]: float(r["correct"]) for r in graded},
                      "score": {r["prompt_id"]: r["policy_score"] for r in scored}}
    res.winrate = bootstrap_ci([r["win"] for r in with_teacher], resamples=resamples, seed=seed)
    res.accuracy = bootstrap_ci([float(r["correct"]) for r in graded], resamples=resamples, seed=seed)
    res.score = bootstrap_ci([r["policy_score"] for r in scored], resamples=resamples, seed=seed)
    if len(with_teacher) >= 2:
        lc = lc_winrate_ci([r["win"] for r in with_teacher], [len(r["response"]) for r in with_teacher],
                           [len(r["teacher_response"]) for r in with_teacher],
                           resamples=max(50, resamples // 4), seed=seed)
        if lc is not None:
            res.lc_winrate, res.length_slope = lc[1], lc[0].length_slope
    return res


def read_train_logs(run: Path) -> dict[int, list[dict]]:
    out = {}
    for log in sorted(Path(run).glob("iter-*/checkpoint/train_log.jsonl")):
        try:
            t = int(log.parent.parent.name.split("-", 1)[1])
            out[t] = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        except ValueError:
            raise DnoError(f"{log}: not a train log (JSON lines); rerun dno train") from None
    return out


def find_cache(run: Path, cache: Path | None) -> Path | None:
    if cache is not None:
        cache = Path(cache)
        if cache.is_dir():
            cache = cache / "judge.sqlite"
        if not cache.is_file():
            raise DnoError(f"--cache {cache}: no such judge cache")
        return cache
    found = sorted(Path(run).glob("cache/*.sqlite"))
    if found:
        return found[0]
    from .openai_api.call_cache import default_cache_path  # where `dno judge` caches without --cache

    return default_cache_path() if default_cache_path().is_file() else None


def judge_costs(run: Path, calls, cache: Path | None, prices: Path | None) -> list[dict]:
    """Tokens and cost of the calls a run made (cached rows were paid earlier), read from the judge cache."""
    from .openai_api.costs import cost_usd, load_prices

    if calls.height == 0:
        return []
    path = find_cache(run, cache)
    groups: dict[tuple, list[str]] = {}
    for r in calls.to_dicts():
        groups.setdefault((r["iteration"], r["judge"]), []).append(r["call_key"])
    usage: dict[str, tuple] = {}
    if path is not None:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            keys = [k for ks in groups.values() for k in ks]
            for i in range(0, len(keys), 900):
                chunk = keys[i:i + 900]
                q = f"SELECT key, model, input_tokens, output_tokens FROM calls WHERE key IN ({','.join('?' * len(chunk))})"
                for key, model, tin, tout in db.execute(q, chunk):
                    usage[key] = (model, tin or 0, tout or 0)
        except sqlite3.DatabaseError as e:
            raise DnoError(f"{path}: not a judge cache ({e}); pass another --cache") from None
        finally:
            db.close()
    table = load_prices(prices)
    out = []
    for (t, judge), keys in sorted(groups.items()):
        found = [usage[k] for k in keys if k in usage]
        tin, tout = sum(u[1] for u in found), sum(u[2] for u in found)
        model = found[0][0] if found else judge.split(":", 1)[-1]
        cost = cost_usd(model, tin, tout, table) if found else None
        why = ("no judge cache found (pass --cache FILE)" if path is None
               else f"{len(keys) - len(found)} of {len(keys)} calls not in {path.name}" if len(found) < len(keys)
               else f"no price for {model} (pass --prices FILE)" if cost is None else "")
        out.append({"iteration": t, "judge": judge, "calls_made": len(keys), "input_tokens": tin if found else None,
                    "output_tokens": tout if found else None,
                    "cost_usd": None if cost is None else round(cost, 4), "note": why})
    return out


def best_iterate(results: list[IterationResult], metric: str, *, resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0) -> Best | None:
    """The checkpoint with the highest metric, and whether its lead over the next is within noise.

    Within one run (same held-out prompts) a paired bootstrap over prompts decides; across runs
    or for the LC win-rate, overlapping 95 % intervals do.
    """
    if metric not in METRICS:
        raise DnoError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    ranked = sorted(((r, getattr(r, metric)) for r in results if getattr(r, metric) is not None),
                    key=lambda x: -x[1].value)
    if not ranked:
        return None
    (best, bi), rest = ranked[0], ranked[1:]
    if not rest:
        return Best(metric, best, bi, None, None, None, "")
    nxt, ni = rest[0]
    if metric in PER_PROMPT:
        key = PER_PROMPT[metric]
        d = paired_bootstrap(best.per_prompt[key], nxt.per_prompt[key], resamples=resamples, seed=seed)
        if d is not None and d.diff.n >= 2:
            scale, unit = (1, "") if metric == "score" else (100, " pts")
            how = f"paired bootstrap over {d.diff.n} shared prompts: difference {d.diff.fmt(scale, 1, unit)}"
            return Best(metric, best, bi, nxt, ni, d.within_noise, how)
    overlap = bi.overlaps(ni)
    return Best(metric, best, bi, nxt, ni, overlap, "the 95 % intervals " + ("overlap" if overlap else "do not overlap"))


# ---------------------------------------------------------------- plots

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    _plt().close(fig)
    return buf.getvalue()


def _errorbar(ax, results: list[IterationResult], attr: str, scale: float, label: str, marker="o", offset=0.0):
    pts = [(r.iteration + offset, getattr(r, attr)) for r in results if getattr(r, attr) is not None]
    if not pts:
        return False
    x = [p[0] for p in pts]
    y = [p[1].value * scale for p in pts]
    err = [[(p[1].value - p[1].low) * scale for p in pts], [(p[1].high - p[1].value) * scale for p in pts]]
    ax.errorbar(x, y, yerr=err, marker=marker, capsize=4, label=label)
    return True


def plot_eval(runs: list[RunData]) -> bytes | None:
    panels = [("winrate", "win-rate vs teacher (%)"), ("accuracy", "accuracy (%)"), ("score", "mean policy score")]
    panels = [p for p in panels if any(getattr(r, p[0]) is not None for d in runs for r in d.results)]
    if not panels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
    for ax, (attr, title) in zip(axes[0], panels):
        scale = 1 if attr == "score" else 100
        for i, d in enumerate(runs):
            prefix = f"{d.name}: " if len(runs) > 1 else ""
            _errorbar(ax, d.results, attr, scale, prefix + METRIC_LABELS[attr], offset=0.04 * i)
            if attr == "winrate":
                _errorbar(ax, d.results, "lc_winrate", scale, prefix + "LC win-rate", marker="s", offset=0.04 * i + 0.08)
        if attr == "winrate":
            ax.axhline(50, color="grey", lw=0.8, ls=":")
        ax.set_title(title + " ± 95 % bootstrap interval")
        ax.set_xlabel("iteration (0 = initial policy)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
    return _png(fig)


def plot_pair_types(runs: list[RunData]) -> bytes | None:
    runs = [d for d in runs if d.tables["pair_types"].height]
    if not runs:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 3.4), squeeze=False)
    kinds = [("teacher_gt_policy", "teacher>policy"), ("policy_gt_teacher", "policy>teacher"),
             ("policy_gt_policy", "policy>policy")]
    for ax, d in zip(axes[0], runs):
        df = d.tables["pair_types"]
        x = df["iteration"].to_list()
        bottom = [0.0] * len(x)
        for col, label in kinds:
            vals = [v or 0.0 for v in df[f"{col}_pct"].to_list()]
            ax.bar(x, vals, bottom=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, vals)]
        for xi, n in zip(x, df["new_pairs"].to_list()):
            ax.text(xi, 101, f"{n} pairs", ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, 112)
        ax.set_ylabel("share of new pairs (%)")
        ax.set_xlabel("iteration")
        ax.set_xticks(x)
        ax.set_title(f"pair types{' — ' + d.name if len(runs) > 1 else ''}")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    return _png(fig)


def plot_length_drift(runs: list[RunData]) -> bytes | None:
    cols = [("chosen_chars", "chosen"), ("rejected_chars", "rejected"), ("policy_sample_chars", "policy samples"),
            ("eval_answer_chars", "eval answers"), ("teacher_chars", "teacher")]
    if not any(d.tables["length_drift"].height for d in runs):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for d in runs:
        df = d.tables["length_drift"]
        for col, label in cols:
            pts = [(t, v) for t, v in zip(df["iteration"].to_list(), df[col].to_list()) if v is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                        label=f"{d.name}: {label}" if len(runs) > 1 else label)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("mean length (characters)")
    ax.set_xlabel("iteration")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title("answer length per iteration")
    ax.legend(fontsize=8)
    return _png(fig)


def plot_judge(runs: list[RunData]) -> bytes | None:
    bias = [d for d in runs if d.tables["position_bias"].height]
    pw = [(d, d.tables["position_bias"].filter(d.tables["position_bias"]["kind"] == "pair")) for d in bias]
    sc = [(d, d.tables["position_bias"].filter(d.tables["position_bias"]["kind"] == "score")) for d in bias]
    pw, sc = [x for x in pw if x[1].height], [x for x in sc if x[1].height]
    fails = [d for d in runs if d.tables["failures"].height]
    n = bool(pw) + bool(sc) + bool(fails)
    if not n:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 3.6), squeeze=False)
    axes = list(axes[0])
    its = sorted({t for d in runs for t in d.tables["failures"]["iteration"].to_list()}
                 | {t for d in bias for t in d.tables["position_bias"]["iteration"].to_list()})
    multi = len(runs) > 1
    if pw:
        ax = axes.pop(0)
        for d, df in pw:
            ax.plot(df["iteration"].to_list(), df["p_first_shown_wins"].to_list(), marker="o",
                    label=(f"{d.name}: " if multi else "") + "P(first shown wins)")
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_ylim(0, 1)
        ax.set_title("pairwise judges: P(first shown wins), 0.5 = no bias")
        ax.legend(fontsize=8)
    if sc:
        ax = axes.pop(0)
        for d, df in sc:
            for t in sorted(set(df["iteration"].to_list())):
                s = df.filter(df["iteration"] == t).sort("shown_position")
                ax.plot([p + 1 for p in s["shown_position"].to_list()], s["mean_score"].to_list(), marker="o",
                        label=(f"{d.name}: " if multi else "") + f"iteration {t}")
        ax.set_title("score judges: mean score by shown position")
        ax.set_xlabel("shown position (1 = first)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
    if fails:
        ax = axes.pop(0)
        statuses = sorted({s for d in fails for s in d.tables["failures"]["status"].to_list()},
                          key=lambda s: (s != "ok", s))
        width = 0.8 / len(fails)
        for i, d in enumerate(fails):
            rows = d.tables["failures"].to_dicts()
            t_run = sorted({r["iteration"] for r in rows})
            bottom = [0] * len(t_run)
            for s in statuses:
                vals = [sum(r["judgments"] for r in rows if r["iteration"] == t and r["status"] == s) for t in t_run]
                ax.bar([t - 0.4 + width * (i + 0.5) for t in t_run], vals, width=width, bottom=bottom,
                       label=(f"{d.name}: " if len(fails) > 1 else "") + s)
                bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_yscale("symlog", linthresh=10)
        ax.set_title("judgments by status (log scale)")
        ax.legend(fontsize=8)
    for ax in fig.axes:
        if ax.get_xlabel():
            continue
        ax.set_xticks(its)
        ax.set_xlim(min(its) - 0.6, max(its) + 0.6)
        ax.set_xlabel("iteration")
    return _png(fig)


def _smooth(values: list, window: int | None = None) -> list:
    """Trailing moving average (window: a twentieth of the steps), for noisy per-step curves.

    >>> _smooth([1.0, 3.0, 5.0], window=2)
    [1.0, 2.0, 4.0]
    """
    import numpy as np

    x = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    w = window or max(1, len(x) // 20)
    c = np.cumsum(np.insert(np.nan_to_num(x), 0, 0.0))
    out = [(c[i + 1] - c[max(0, i + 1 - w)]) / min(w, i + 1) for i in range(len(x))]
    return [float(v) for v in out]


def plot_training(runs: list[RunData]) -> bytes | None:
    runs = [d for d in runs if d.train_logs]
    if not runs:
        return None
    plt = _plt()
    keys = [("loss", "loss"), ("reward_accuracy", "reward accuracy"), ("margin", "reward margin")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for d in runs:
        offset = 0
        for t, log in sorted(d.train_logs.items()):
            steps = [offset + h.get("step", i + 1) for i, h in enumerate(log)]
            for ax, (k, _) in zip(axes, keys):
                vals = [h.get(k) for h in log]
                raw = ax.plot(steps, vals, lw=0.6, alpha=0.35)[0]
                ax.plot(steps, _smooth(vals), lw=1.6, color=raw.get_color(),
                        label=f"{d.name + ' ' if len(runs) > 1 else ''}iteration {t}")
            offset = steps[-1] if steps else offset
            for ax in axes:
                ax.axvline(offset + 0.5, color="grey", lw=0.5, ls=":")
    for ax, (_, title) in zip(axes, keys):
        ax.set_title(title)
        ax.set_xlabel("optimizer step (iterations one after another)")
    axes[0].set_title("loss (faint: per step; bold: moving average)")
    axes[0].legend(fontsize=8)
    return _png(fig)


# ---------------------------------------------------------------- the page

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


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    runs = [collect_run(r, resamples=resamples, seed=seed, cache=cache, prices=prices) for r in run_dirs]
    names = [d.name for d in runs]
    if len(set(names)) < len(names):  # two runs of one name in different folders
        for d in runs:
            d.name = str(d.path)
    results = [r for d in runs for r in d.results]
    best = best_iterate(results, metric, resamples=resamples, seed=seed)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figures = {"eval": plot_eval(runs), "pair_types": plot_pair_types(runs), "length_drift": plot_length_drift(runs),
               "judge": plot_judge(runs), "training": plot_training(runs)}
    pngs = {}
    for key, data in figures.items():
        if data is not None:
            path = output.with_name(f"{output.stem}-{key}.png")
            _write_atomic(path, data)
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
        "does not say what is correct.</p>",
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
                  "token counts and the price table.</p>", html_table(costs)]
    else:
        parts.append("<p class='note'>No API calls: the judges were local (oracles, python functions, reward models), "
                     "so nothing was paid.</p>")
    parts += ['<h2 id="training">Training curves</h2>',
              '<p class="note">From each checkpoint\'s train_log.jsonl: loss, reward accuracy (share of pairs '
              "with a positive implicit-reward margin) and the mean margin, per optimizer step.</p>",
              html_table(training_rows(runs)), img("training", "training curves"), "</body></html>"]
    _write_atomic(output, "\n".join(parts).encode())
    return Report(output, [p for p, _ in pngs.values()], runs, best)
