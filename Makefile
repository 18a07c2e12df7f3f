# One entry point for people and CI. `make test` is what .ci/run calls.
.PHONY: setup test lint run screenshots bench clean package package-smoke install-desktop chaos

VENV := .venv
BIN := $(VENV)/bin
export QT_QPA_PLATFORM ?= offscreen

setup:
	scripts/bootstrap.sh --peers

test: setup lint
	$(BIN)/pytest -q

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy r3mes_desktop

# The app on the embedded devnet (a real window: the offscreen default is dropped).
run:
	scripts/bootstrap.sh --gui
	env -u QT_QPA_PLATFORM $(BIN)/r3mes-desktop

# README screenshots under Xvfb: the main window while mining (1280x800, and 1920x1080),
# each settings tab; then the governor holding mining back and Settings -> Resources.
screenshots:
	scripts/bootstrap.sh --gui
	xvfb-run -a -s "-screen 0 1920x1080x24" env QT_QPA_PLATFORM=xcb \
		$(BIN)/python -m r3mes_desktop.gui.screenshots docs/screenshots
	xvfb-run -a -s "-screen 0 1920x1080x24" env QT_QPA_PLATFORM=xcb \
		$(BIN)/python scripts/governor_screenshots.py docs/screenshots

bench: setup
	$(BIN)/python -m bench

# Chaos, crash and bad-input runs with invariants checked against the chain (long: see
# docs/reliability.md for the figures of the last run and smaller commands).
chaos: setup
	$(BIN)/python -m bench.chaos --parallel --report docs/reliability.md

# The desktop bundle (dist/r3mes-desktop/, several minutes: torch). Not part of `make test`.
package: setup
	$(BIN)/pyinstaller --noconfirm --clean --distpath dist --workpath build/pyinstaller \
		packaging/r3mes-desktop.spec
	du -sh dist/r3mes-desktop

# Start the built bundle offscreen until its main window paints; then the headless miner.
package-smoke:
	packaging/smoke.sh dist/r3mes-desktop

# Put the .desktop file and icons in the user's application menu (XDG, no root).
install-desktop:
	packaging/install-desktop.sh

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache tests/peers/node_modules
