"""Where a benchmark's figures come from: the commit (and whether the code measured had uncommitted changes) and the
machine, for the header of every results file."""
from __future__ import annotations
import os, platform, subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def commit(*paths: str) -> str:
    "Short hash of HEAD, noting uncommitted changes to tracked files under `paths` (default: the package and benchmarks)."
    paths = paths or ("k2ssl_lit", "benchmarks")
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *paths], cwd=ROOT,
                               capture_output=True, text=True).stdout
    except OSError: return "unknown"
    changed = [line[3:] for line in dirty.splitlines()]
    return (sha or "unknown") + (f" (uncommitted changes in {', '.join(changed)})" if changed else "")


def cpu_name() -> str:
    "The CPU's model name (Linux's /proc/cpuinfo), else what the platform module knows."
    try: return next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration): return platform.processor() or platform.machine()


def machine() -> str:
    "CPU model and count, Python and torch versions (torch only when it is already imported)."
    import sys
    torch = sys.modules.get("torch")
    return (f"{cpu_name()}, {os.cpu_count()} CPUs, python {platform.python_version()}"
            + (f", torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch else ""))
