"""How many CPUs this process may use: the cgroup quota (a Kubernetes CPU limit), else its affinity.

Shared by the service (inference and decoding threads) and batch prediction (decoding processes).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_limit(root: Path = CGROUP_ROOT) -> int:
    """The CPUs this process may use: the cgroup CPU quota (a Kubernetes CPU limit) when there is one,
    else the CPUs it is pinned to. ``os.cpu_count()`` counts the *node's* cores, so a pod limited to
    1 CPU on a 64-core node would start 64 decoding threads."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota(root)
    return max(1, min(cpus, math.ceil(quota))) if quota else max(1, cpus)


def _cgroup_quota(root: Path) -> float | None:
    """CPUs allowed by cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``; None when unlimited or unknown."""
    for quota_file, period_file in ((root / "cpu.max", None),
                                    (root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"),
                                    (root / "cpu,cpuacct" / "cpu.cfs_quota_us",
                                     root / "cpu,cpuacct" / "cpu.cfs_period_us")):
        try:
            fields = quota_file.read_text().split()
            if period_file is not None:
                fields.append(period_file.read_text().strip())
            quota, period = fields[0], float(fields[1])
        except (OSError, IndexError, ValueError):
            continue
        if quota in ("max", "-1") or period <= 0:
            return None
        return float(quota) / period
    return None
