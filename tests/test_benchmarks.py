"""The benchmark scripts still run; their figures are printed, not asserted."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent


async def test_the_latency_benchmark_runs_and_reports_every_sample(
    mongo_uri: str,
) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(ROOT / "benchmarks" / "latency.py"), "--uri", mongo_uri,
         "--samples", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert (figures["samples"], figures["batch_window"]) == (5, "10ms")
    assert set(figures) == {
        "samples", "batch_window", "p50_ms", "p90_ms", "p99_ms", "max_ms"
    }  # fmt: skip
