#!/usr/bin/env bash
# Smoke-test a built bundle: the desktop app starts offscreen and paints its main window,
# and the headless miner answers. Uses throwaway config/data/log dirs.
# Usage: packaging/smoke.sh [BUNDLE_DIR]   (default: dist/r3mes-desktop)
set -euo pipefail
bundle=${1:-dist/r3mes-desktop}
[ -x "$bundle/r3mes-desktop" ] || { echo "no bundle at $bundle: run 'make package'" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export QT_QPA_PLATFORM=offscreen R3MES_CONFIG_DIR="$tmp/config" R3MES_DATA_DIR="$tmp/data" \
  R3MES_LOG_DIR="$tmp/logs"

# --startup-probe prints "first-paint-s <seconds> ..." once the main window painted, then quits.
probe=$(timeout 120 "$bundle/r3mes-desktop" --startup-probe | grep '^first-paint-s ')
echo "r3mes-desktop: main window painted $(echo "$probe" | awk '{print $2}')s after start ($probe)"
"$bundle/r3mes-miner" --help >/dev/null
"$bundle/r3mes-miner" --json stats | grep -q '"total_transactions": 0'
echo "r3mes-miner: stats ok"
if [ "${SMOKE_MINE:-1}" = 1 ]; then
  # One devnet round through the frozen binary: proves the spawned torch worker and the
  # PoW processes start from the bundle (multiprocessing.freeze_support) and commit.
  timeout 300 "$bundle/r3mes-miner" run --fast --rounds 1 --json -q > "$tmp/run.json"
  grep -q '"state": "committed"' "$tmp/run.json"
  echo "r3mes-miner: one devnet round committed from the bundle"
fi
