"""Time `clinicbridge --help` (target < 0.5 s: heavy imports are lazy).

Baseline in the same run: `python -c pass`, the interpreter's own start-up.
Prints one JSON object.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 0.5
RUNS = 15


def _median_seconds(cmd: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 4)


def main() -> int:
    cli = str(Path(sys.executable).parent / "clinicbridge")
    python = _median_seconds([sys.executable, "-c", "pass"])
    help_s = _median_seconds([cli, "--help"])
    result = {
        "benchmark": "cli_startup",
        "python_startup_s": python,
        "clinicbridge_help_s": help_s,
        "target_s": TARGET_S,
        "pass": help_s < TARGET_S,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
