#!/usr/bin/env bash
# Install the launcher and icons into the user's application menu (XDG; no root needed).
# Usage: packaging/install-desktop.sh [BUNDLE_DIR]   (default: dist/r3mes-desktop, else the
#        r3mes-desktop found on PATH, e.g. from `pip install`)
# Undo:  packaging/install-desktop.sh --uninstall
set -euo pipefail
cd "$(dirname "$0")/.."

data_home=${XDG_DATA_HOME:-$HOME/.local/share}
apps="$data_home/applications"
icons="$data_home/icons/hicolor"
desktop_file="$apps/r3mes-desktop.desktop"

if [ "${1:-}" = "--uninstall" ]; then
  rm -f "$desktop_file"
  find "$icons" -name 'r3mes-desktop.*' -delete 2>/dev/null || true
  command -v update-desktop-database >/dev/null && update-desktop-database -q "$apps" || true
  echo "removed $desktop_file and icons"
  exit 0
fi

bundle=${1:-dist/r3mes-desktop}
if [ -x "$bundle/r3mes-desktop" ]; then
  exec_path="$(cd "$bundle" && pwd)/r3mes-desktop"
elif command -v r3mes-desktop >/dev/null; then
  exec_path="$(command -v r3mes-desktop)"
else
  echo "no bundle at $bundle and no r3mes-desktop on PATH: run 'make package' first" >&2
  exit 1
fi

mkdir -p "$apps"
for png in resources/icons/hicolor/*/apps/r3mes-desktop.png; do
  size_dir=$(basename "$(dirname "$(dirname "$png")")")
  install -Dm644 "$png" "$icons/$size_dir/apps/r3mes-desktop.png"
done
install -Dm644 resources/icons/r3mes-desktop.svg "$icons/scalable/apps/r3mes-desktop.svg"
# Absolute Exec/TryExec: a bundle is not on PATH.
sed -e "s|^Exec=.*|Exec=\"$exec_path\"|" -e "s|^TryExec=.*|TryExec=$exec_path|" \
  resources/r3mes-desktop.desktop > "$desktop_file"
chmod 644 "$desktop_file"
if command -v desktop-file-validate >/dev/null; then
  desktop-file-validate "$desktop_file"
fi
command -v update-desktop-database >/dev/null && update-desktop-database -q "$apps" || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t "$icons" || true
echo "installed $desktop_file (Exec=$exec_path)"
