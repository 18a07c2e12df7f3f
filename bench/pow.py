"""Proof-of-work hash rate: per core against `openssl speed`, and scaling to all cores.

Run: .venv/bin/python -m bench.pow [--seconds 3]. Searches with an unreachable target so
nothing stops early; rates are taken between two counter readings after the processes are
running (spawn time excluded). openssl runs with -elapsed (wall time, as ours; its default
divides by CPU time, which flatters it on a busy machine). Its figure for 64-byte inputs
(two compressions each) is converted to hashes/s; ours needs one compression per nonce
thanks to the midstate. Targets: >= 0.5 of openssl per core, >= 0.95 linear scaling.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import time

from r3mes_desktop.mining.pow import NonceSearch

NEVER = bytes(32)  # no digest is below zero: the search runs until cancelled


def openssl_hashes_per_s(seconds: int) -> float | None:
    if shutil.which("openssl") is None:
        return None
    out = subprocess.run(
        ["openssl", "speed", "-elapsed", "-seconds", str(seconds), "-bytes", "64", "sha256"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"^sha256\s+([\d.]+)k", out, re.MULTILINE)
    return float(match.group(1)) * 1000 / 64 if match else None


def search_rate(processes: int, seconds: float) -> float:
    search = NonceSearch(bytes(60), 32, processes=processes, target=NEVER).start()
    try:
        while search.status().hashes == 0:  # wait until every process is hashing
            time.sleep(0.05)
        time.sleep(0.3)
        h0, t0 = search.status().hashes, time.perf_counter()
        time.sleep(seconds)
        h1, t1 = search.status().hashes, time.perf_counter()
    finally:
        search.cancel()
        search.join()
    return (h1 - h0) / (t1 - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    ssl_runs, one_runs, all_runs = [], [], []
    for _ in range(args.repeats):  # interleaved, best of each: the cores are shared
        ssl_runs.append(openssl_hashes_per_s(max(1, int(args.seconds))) or 0.0)
        one_runs.append(search_rate(1, args.seconds))
        all_runs.append(search_rate(cores, args.seconds))
    ssl, one, alln = max(ssl_runs), max(one_runs), max(all_runs)
    print(f"load average: {os.getloadavg()[0]:.2f} on {cores} cores (other processes share them)")
    if ssl:
        print(f"openssl speed sha256 64 B: {ssl / 1e6:8.3f} M hashes/s (one core)")
    print(f"search, 1 process        : {one / 1e6:8.3f} M hashes/s")
    print(f"search, {cores} processes      : {alln / 1e6:8.3f} M hashes/s")
    if ssl:
        print(f"per-core ratio to openssl: {one / ssl:.3f}  (target >= 0.5)")
    print(f"scaling 1 -> {cores} cores      : {alln / (cores * one):.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
