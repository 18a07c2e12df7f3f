"""Run every benchmark in turn (`make bench`); each prints its own figures and ratios.

Benchmarks compete for the same cores, so they run one after another, never together.
Pass names to run a subset: `python -m bench pow training`.
"""

from __future__ import annotations

import subprocess
import sys
import time

BENCHES = [
    "coordinator",
    "pow",
    "training",
    "checkpoint",
    "services",
    "gui",
    "device_check",
    "learning",
    "governor",
    "caps",
    "gpu_hold",
]


def main(argv: list[str]) -> int:
    names = argv or BENCHES
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown bench {unknown}; choose from {BENCHES}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"\n=== bench.{name} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"bench.{name}"])
        print(f"=== bench.{name}: exit {code} in {time.perf_counter() - start:.1f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
