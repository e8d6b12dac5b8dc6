"""`dno report RUN [RUN...]`: what DNO did, as one self-contained HTML page plus its PNGs.

Per iteration (and per run): win-rate against the teacher, length-controlled win-rate,
accuracy and mean score, each with a bootstrap 95 % interval; the best iterate by a chosen
metric and whether its lead is within noise; pair types; length drift; the judge's position
bias, failures, calls, cache hits and cost; the training curves from each checkpoint's
train_log.jsonl. The numbers come from the canned queries (dno_data/sql/queries) and
dno_data.stats; plots are matplotlib PNGs, embedded as base64 (no network, no scripts).

Modules: data (collecting a run's results, costs, train logs, the best iterate), plots (the figures),
page (the HTML page and write_report).
"""

from .data import (METRIC_LABELS, METRICS, PER_PROMPT, TABLE_QUERIES, Best, IterationResult, RunData, best_iterate,
                   collect_run, find_cache, judge_costs, read_train_logs)
from .page import Report, html_table, position_rows, results_rows, training_rows, write_report
from .plots import plot_eval, plot_judge, plot_length_drift, plot_pair_types, plot_training

__all__ = ["METRICS", "METRIC_LABELS", "PER_PROMPT", "TABLE_QUERIES", "Best", "IterationResult", "Report", "RunData",
           "best_iterate", "collect_run", "find_cache", "html_table", "judge_costs", "plot_eval", "plot_judge",
           "plot_length_drift", "plot_pair_types", "plot_training", "position_rows", "read_train_logs", "results_rows",
           "training_rows", "write_report"]
