"""`DNO_REQUIRE_SLOW=1`: a slow test that would skip fails instead.

The slow tests skip where vLLM, SmolLM2 or `just` is missing, which is right in the main
environment and wrong in the slow tier's own (`just test-slow`, `.ci/run`): there a skip would
pass while nothing ran. tests/conftest.py registers the hook.
"""

from __future__ import annotations

import os

import pytest

ENV = "DNO_REQUIRE_SLOW"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and not hasattr(report, "wasxfail") and os.environ.get(ENV) == "1"
            and item.get_closest_marker("slow") is not None):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"{ENV}=1 and this slow test would skip: {reason}"
