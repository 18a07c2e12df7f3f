"""Status icons drawn with QPainter: no image files to ship or lose.

Idle is grey, mining green, error red; the same disc is used for the tray, the window icon
and the banner, so the colour means the same thing everywhere.
"""

from __future__ import annotations

from functools import cache

from r3mes_desktop.gui.qt import Qt, QtCore, QtGui

STATUS_COLOURS = {"idle": "#78909c", "mining": "#2e7d32", "error": "#c62828"}


@cache
def status_icon(status: str, size: int = 64) -> QtGui.QIcon:
    """A filled disc with a white glyph: pause bars (idle), a spark (mining), "!" (error)."""
    colour = QtGui.QColor(STATUS_COLOURS.get(status, STATUS_COLOURS["idle"]))
    pixmap = QtGui.QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QtGui.QPainter(pixmap)
    painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(colour)
    m = size * 0.06
    painter.drawEllipse(QtCore.QRectF(m, m, size - 2 * m, size - 2 * m))
    painter.setBrush(Qt.GlobalColor.white)
    s = size / 64.0
    if status == "mining":
        bolt = QtGui.QPolygonF(
            [
                QtCore.QPointF(36 * s, 10 * s),
                QtCore.QPointF(18 * s, 36 * s),
                QtCore.QPointF(30 * s, 36 * s),
                QtCore.QPointF(26 * s, 54 * s),
                QtCore.QPointF(46 * s, 26 * s),
                QtCore.QPointF(34 * s, 26 * s),
            ]
        )
        painter.drawPolygon(bolt)
    elif status == "error":
        painter.drawRoundedRect(QtCore.QRectF(28 * s, 14 * s, 8 * s, 24 * s), 3 * s, 3 * s)
        painter.drawEllipse(QtCore.QRectF(27.5 * s, 42 * s, 9 * s, 9 * s))
    else:
        painter.drawRect(QtCore.QRectF(22 * s, 18 * s, 7 * s, 28 * s))
        painter.drawRect(QtCore.QRectF(35 * s, 18 * s, 7 * s, 28 * s))
    painter.end()
    return QtGui.QIcon(pixmap)
