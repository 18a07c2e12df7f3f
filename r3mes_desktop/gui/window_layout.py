"""The main window's widget tree, built once: toolbar and menus, the central splitters.

Kept out of main_window.py so that file holds behaviour (wiring, events, closing) and this
one holds geometry (what goes where, column widths, splitter sizes at 1280×800).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from r3mes_desktop.gui.models.transactions_model import STATE_FILTERS, TransactionsModel
from r3mes_desktop.gui.qt import Qt, QtCore, QtWidgets

if TYPE_CHECKING:
    from r3mes_desktop.gui.main_window import MainWindow


def build_toolbar_and_menus(window: MainWindow) -> None:
    """Toolbar, File/Mining/Recovery menus: the same QAction objects everywhere."""
    a = window.window_actions
    toolbar = window.addToolBar("Mining")
    toolbar.setObjectName("main-toolbar")
    toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    toolbar.setMovable(False)
    for action in a.toolbar_order():
        if action is None:
            toolbar.addSeparator()
        else:
            toolbar.addAction(action)
    menu = window.menuBar()
    file_menu = menu.addMenu("&File")
    file_menu.addAction(a.open_data)
    file_menu.addAction(a.export_diagnostics)
    file_menu.addAction(a.settings)
    file_menu.addSeparator()
    file_menu.addAction(a.quit)
    mining = menu.addMenu("&Mining")
    for action in (a.start, a.pause, a.finish, a.stop):
        mining.addAction(action)
    recovery = menu.addMenu("&Recovery")
    recovery.addAction(a.resume)
    recovery.addAction(a.cleanup)


def repaint_time_columns(view: QtWidgets.QTableView) -> None:
    """Repaint only the Age and Next retry cells (the once-a-second tick): a third of the
    table's paint, whose every cell calls the Python model several times."""
    viewport = view.viewport()
    for col in (TransactionsModel.COL_AGE, TransactionsModel.COL_RETRY):
        x = view.columnViewportPosition(col)
        if x + view.columnWidth(col) > 0 and x < viewport.width():
            viewport.update(QtCore.QRect(x, 0, view.columnWidth(col), viewport.height()))


def build_central(window: MainWindow) -> None:
    """Banner, transactions + details (top), charts/breakers/dead letters/log tabs (bottom)."""
    window.tx_view = QtWidgets.QTableView()
    window.tx_view.setObjectName("transactions-view")
    window.tx_view.setModel(window.tx_proxy)
    window.tx_view.setSortingEnabled(True)
    window.tx_view.sortByColumn(TransactionsModel.COL_AGE, Qt.SortOrder.AscendingOrder)
    window.tx_model.ticked.connect(lambda: repaint_time_columns(window.tx_view))
    window.tx_view.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
    window.tx_view.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
    window.tx_view.setAlternatingRowColors(True)
    window.tx_view.verticalHeader().hide()
    window.tx_view.verticalHeader().setDefaultSectionSize(22)
    header = window.tx_view.horizontalHeader()
    header.setStretchLastSection(True)
    for col, width in enumerate((78, 50, 250, 100, 80, 64, 72, 95)):
        window.tx_view.setColumnWidth(col, width)
    window.tx_view.selectionModel().currentRowChanged.connect(window._selection_changed)

    window.state_filter = QtWidgets.QComboBox()
    window.state_filter.setObjectName("state-filter")
    window.state_filter.addItems(list(STATE_FILTERS))
    window.state_filter.currentTextChanged.connect(window.tx_proxy.set_state_filter)
    top = QtWidgets.QHBoxLayout()
    title = QtWidgets.QLabel("<b>Transactions</b>")
    top.addWidget(title)
    top.addSpacing(24)
    top.addWidget(window.earnings)
    top.addStretch(1)
    top.addWidget(QtWidgets.QLabel("Show:"))
    top.addWidget(window.state_filter)
    tx_box = QtWidgets.QWidget()
    tx_layout = QtWidgets.QVBoxLayout(tx_box)
    tx_layout.setContentsMargins(0, 0, 0, 0)
    tx_layout.addLayout(top)
    tx_layout.addWidget(window.tx_view)

    upper = QtWidgets.QSplitter(Qt.Orientation.Horizontal)
    upper.addWidget(tx_box)
    upper.addWidget(window.details)
    upper.setStretchFactor(0, 3)
    upper.setStretchFactor(1, 1)
    upper.setSizes([900, 340])

    window.tabs = QtWidgets.QTabWidget()
    window.tabs.setObjectName("lower-tabs")
    window.tabs.addTab(window.charts_host, "Charts")
    for tab in ("Circuit breakers", "Dead letters", "Log"):
        window.tabs.addTab(QtWidgets.QWidget(), tab)  # built after the first paint

    lower = QtWidgets.QSplitter(Qt.Orientation.Vertical)
    lower.addWidget(upper)
    lower.addWidget(window.tabs)
    lower.setSizes([330, 420])

    central = QtWidgets.QWidget()
    layout = QtWidgets.QVBoxLayout(central)
    layout.setContentsMargins(6, 6, 6, 2)
    layout.addWidget(window.banner)
    layout.addWidget(lower, 1)
    window.setCentralWidget(central)
    window.resize(1280, 800)
