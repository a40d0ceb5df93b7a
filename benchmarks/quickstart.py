"""Wall time of the main job: `optiforge run` (built-in quickstart), end to end.

Runs the installed command in a fresh process, as a user would (install
excluded), and prints the wall time and the resulting accuracy.

    python benchmarks/quickstart.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    command = shutil.which("optiforge") or str(Path(sys.executable).parent / "optiforge")
    times, accuracy = [], None
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            subprocess.run([command, "run", "--out", out, "--no-progress"], check=True, capture_output=True)
            times.append(time.perf_counter() - start)
            accuracy = json.loads((Path(out) / "report.json").read_text())["stages"][-1]["value"]
    print(
        f"optiforge run (quickstart): median {statistics.median(times):.1f} s over {args.repeats} runs "
        f"(min {min(times):.1f}, max {max(times):.1f}); test accuracy {accuracy:.4f}"
    )


if __name__ == "__main__":
    main()
