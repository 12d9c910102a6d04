"""The line every benchmark prints first: when it ran and how busy the machine was.

Figures from a shared machine mean little without its load beside them: a 1-minute load
average at or above the CPU count means the run competed for CPU and its times are high.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, not the host's total, where known)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def header(title: str) -> str:
    """``title``, then one line: UTC date and time, load averages (1, 5, 15 min), CPU count."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    one, five, fifteen = os.getloadavg()
    return f"{title}\n{now} | load average {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min) | {cpu_count()} CPUs"
