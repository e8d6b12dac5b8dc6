"""The report's figures: matplotlib PNGs (as bytes) of eval results, pair types, length drift, the judge
and the training curves."""

from __future__ import annotations

import io

from .data import METRIC_LABELS, IterationResult, RunData


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

