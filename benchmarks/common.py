"""Shared by the benchmark scripts: git sha, CPU name, package versions, quantiles, and appending rows to a
results CSV."""

from __future__ import annotations

import csv
import os
import platform
import statistics
import subprocess
from importlib import metadata
from pathlib import Path


def git_sha() -> str:
    """Short sha of the checkout; NPR_GIT_SHA when set (a device copy of the tree has no .git)."""
    sha = os.environ.get("NPR_GIT_SHA", "")
    if sha:
        return sha
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip() or "-"
    except (OSError, subprocess.CalledProcessError):
        return "-"


def cpu_device() -> str:
    """The CPU model and core count, for rows measured on the CPU."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {model}, {os.cpu_count()} cores"


def dist_version(dist: str) -> str:
    """The installed version of a distribution, "-" when absent."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """(median, p20, p80) of repeated measurements."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    deciles = statistics.quantiles(values, n=10, method="inclusive")
    return statistics.median(values), deciles[1], deciles[7]


def append_rows(path: str | Path, rows: list[dict]) -> None:
    """Append rows to a CSV, writing the header when the file is new; when the rows bring columns the
    file lacks, the file is rewritten with them added at the end (older rows leave them empty)."""
    if not rows:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0])
    if out.exists():
        with out.open(newline="") as handle:
            reader = csv.DictReader(handle)
            old_fields, old_rows = list(reader.fieldnames or []), list(reader)
        extra = [f for f in fields if f not in old_fields]
        if extra:
            with out.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=old_fields + extra)
                writer.writeheader()
                writer.writerows(old_rows)
        fields = old_fields + extra
    is_new = not out.exists()
    with out.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        if is_new:
            writer.writeheader()
        writer.writerows(rows)
    print(f"appended {len(rows)} rows to {out}")
