"""The PySide6 desktop app: one window over the Qt-free core (see gui/bridge.py)."""
