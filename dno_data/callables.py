"""`module:function` specs for user code (judges, teachers)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from .errors import DnoError
from .ids import stable_hash


def _import(module_name: str):
    """Import a user's module: installed, on PYTHONPATH, or in the working folder. The working folder is tried
    last (appended to the path, never first), so a folder holding packages named like dno's cannot shadow them."""
    import os
    import sys

    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        top = module_name.split(".")[0]
        if e.name != top or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(module_name)


def load_callable(spec: str, flag: str) -> Callable:
    """Import `module:function` (the module must be importable: installed, on PYTHONPATH or in the working folder)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise DnoError(f"{flag} {spec!r}: expected module:function, e.g. mypkg.judges:score")
    try:
        module = _import(module_name)
    except ImportError as e:
        raise DnoError(f"{flag} {spec!r}: cannot import {module_name} ({e}); install it or add it to PYTHONPATH") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise DnoError(f"{flag} {spec!r}: {module_name} has no attribute {attr}")
    if not callable(fn):
        raise DnoError(f"{flag} {spec!r}: {attr} is not callable")
    return fn


def code_hash(fn: Callable) -> str:
    """A hash of the function's source, so editing a judge changes its judge_id."""
    try:
        return stable_hash(inspect.getsource(fn))
    except (OSError, TypeError):
        return stable_hash(getattr(fn, "__qualname__", repr(fn)))


def accepts(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
