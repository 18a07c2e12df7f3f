"""Keep the start-up heap out of the garbage collector's full passes (the worst loop stall).

A full (generation 2) collection walks every container object the process holds, and it
holds the GIL throughout, so whichever thread runs it, the GUI thread stops. Once the window
and the runtime are up that is about 150,000 objects (web3, eth-abi, pyqtgraph, PySide6,
numpy, our modules), and one full pass took 110-120 ms of CPU on the GUI thread while the
window mined: the probe's worst stall of a 5-minute `bench.gui` run (95 ms late, 100.9 ms of
GUI-thread CPU), however short the code that happened to allocate when it struck.

Almost all of those objects live as long as the process (modules, classes, functions,
constants), so after one collection at start-up they are frozen (`gc.freeze`): later
collections skip them and walk only what came after, a few thousand objects (well under a
millisecond). Cyclic garbage among the frozen objects would never be collected, which is why
the start-up garbage is collected first.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
from collections.abc import Iterable

LATE_IMPORTS = ("pyqtgraph",)
"""Modules the window imports only after its first paint (the charts): imported here, off
the GUI thread, so their objects are frozen with the rest even if the charts come later."""


async def freeze_startup_heap(*, late_imports: Iterable[str] = LATE_IMPORTS) -> int:
    """Import `late_imports` in a thread, collect the garbage (one full pass, on the loop:
    a collection cannot run beside it), then freeze every object left; returns how many
    objects are frozen now. Call once, when the runtime is open and before mining starts."""
    for name in late_imports:
        await asyncio.to_thread(importlib.import_module, name)
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
