"""A judge and a teacher that wait at a gate: `python:gate:score` / `python:gate:teach` hold a command
mid-work until the test touches `$DNO_TEST_GATE/go` (they touch `started` when they begin).

    write_gate_module(folder)   # folder/gate.py and folder/gate/, the module the command imports
"""

from __future__ import annotations

from pathlib import Path

SOURCE = '''
import os, time
from pathlib import Path

def _wait():
    gate = Path(os.environ["DNO_TEST_GATE"])
    (gate / "started").touch()
    deadline = time.monotonic() + 60
    while not (gate / "go").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the gate never opened")
        time.sleep(0.02)

def score(messages, response, reference=None):
    _wait()
    return 6 if response == reference else 1

def teach(messages, reference=None):
    _wait()
    return reference
'''


def write_gate_module(folder: Path) -> Path:
    """folder/gate.py (the module) and folder/gate/ (the gate; set DNO_TEST_GATE to it)."""
    (folder / "gate.py").write_text(SOURCE)
    (folder / "gate").mkdir(exist_ok=True)
    return folder / "gate"
