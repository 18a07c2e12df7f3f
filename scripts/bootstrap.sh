#!/usr/bin/env bash
# Set up a fresh clone: Debian libraries Qt needs, the virtual environment, npm test peers.
# Idempotent and quick when nothing changed (stamps keyed on the files that define each part).
# Usage: scripts/bootstrap.sh [--gui] [--peers]
set -euo pipefail
cd "$(dirname "$0")/.."

want_gui=0; want_peers=0
for arg in "$@"; do
  case "$arg" in
    --gui) want_gui=1 ;;
    --peers) want_peers=1 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

apt_pkgs=(libglib2.0-0 libegl1 libgl1 libx11-6 libdbus-1-3 libfontconfig1 libxkbcommon0)
if [ "$want_gui" = 1 ]; then
  # A real window (make run / screenshots) needs the xcb platform plugin's libraries and Xvfb.
  apt_pkgs+=(xvfb xauth libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
             libxcb-render-util0 libxcb-shape0 libxcb-xkb1 libxkbcommon-x11-0
             fonts-dejavu-core fontconfig-config)
fi
if [ "$want_peers" = 1 ]; then
  # promtool and prometheus check the shipped alert rules and scrape a miner in the tests.
  apt_pkgs+=(prometheus)
fi
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $PY"
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=.venv/.r3mes-deps-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing Python packages"
  # torch first and pinned: the local CPU wheel; an unpinned torch pulls GBs of CUDA.
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -e ".[dev]"
  rm -f .venv/.r3mes-deps-*; touch "$stamp"
fi

if [ "$want_peers" = 1 ] && [ -f tests/peers/package.json ]; then
  pstamp=tests/peers/node_modules/.r3mes-$(sha256sum tests/peers/package.json | cut -c1-16)
  if [ ! -f "$pstamp" ]; then
    echo "bootstrap: installing npm test peers (anvil, js-ipfs)"
    (cd tests/peers && npm install --no-audit --no-fund --loglevel=error >/dev/null)
    # anvil's binary comes in the platform package @foundry-rs/anvil lists as optional
    # (e.g. @foundry-rs/anvil-linux-amd64): an install that skipped it must fail here, not
    # leave the chain tests skipping.
    anvil_bin=""
    for f in tests/peers/node_modules/@foundry-rs/anvil-*/bin/anvil; do
      if [ -x "$f" ]; then anvil_bin=$f; fi
    done
    if [ -z "$anvil_bin" ] || ! "$anvil_bin" --version >/dev/null; then
      echo "bootstrap: anvil's platform binary is missing under tests/peers/node_modules/@foundry-rs" >&2
      exit 1
    fi
    touch "$pstamp"
  fi
fi
