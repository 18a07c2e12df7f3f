"""The single import point for Qt.

Every GUI module imports Qt from here, so switching bindings or adding a compatibility
fix touches one file, and the import ban on `core/` stays easy to audit.
"""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtNetwork, QtWidgets
from PySide6.QtCore import Qt, QTimer, Signal, Slot

ModelIndex = QtCore.QModelIndex | QtCore.QPersistentModelIndex
"""What Qt passes to a model's overrides (`data`, `rowCount`, `filterAcceptsRow`)."""

__all__ = [
    "ModelIndex",
    "QTimer",
    "Qt",
    "QtCore",
    "QtGui",
    "QtNetwork",
    "QtWidgets",
    "Signal",
    "Slot",
]
