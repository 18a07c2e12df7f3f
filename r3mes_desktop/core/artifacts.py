"""Gradient files on local disk: written atomically and durably before their hash is journaled.

Intent before effect: the upload step reads the gradient back from here, so after a crash
recovery re-uploads exactly the bytes whose hash the journal holds (same bytes, same CID).
Blocking file I/O runs in the default executor, never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Collection
from pathlib import Path


def write_atomic_sync(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """tmp file + fsync + rename + directory fsync: the file is whole or absent, and durable.

    The one atomic write of the project (gradients, checkpoints, settings, keystores, the
    devnet store). `mode` is set before any byte is written, so a 0600 secret is never
    readable by others, not even half-written. Temp files end in `.tmp` (cleanups skip them).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # no directory fds on Windows
        dir_fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


def write_durable_many_sync(items: list[tuple[Path, bytes]]) -> list[BaseException | None]:
    """Atomic, durable writes of several files, with one fsync per directory.

    The same guarantees as `write_atomic_sync` for each file (whole or absent, durable when
    this returns None for it), but all the data is written before the first fsync, so the
    file system can flush them together, and each directory is fsynced once for all its
    renames. Returns one entry per item: None, or the error that item failed with.
    """
    errors: list[BaseException | None] = [None] * len(items)
    temps: list[tuple[int, int, str]] = []  # item index, fd, temp path
    for i, (path, data) in enumerate(items):
        # one writer per journal (and so per artifacts dir): a fixed temp name is enough,
        # and a leftover of a killed run is simply truncated
        tmp = str(path.parent / f".{path.name}.{os.getpid()}.tmp")
        try:
            fd = _open_tmp(tmp, path.parent)
        except OSError as exc:
            errors[i] = exc
            continue
        temps.append((i, fd, tmp))
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            errors[i] = exc
    for i, fd, _ in temps:
        try:
            if errors[i] is None:
                os.fsync(fd)
        except OSError as exc:
            errors[i] = exc
        finally:
            os.close(fd)
    dirs: dict[Path, None] = {}  # ordered set
    for i, _, tmp in temps:
        path = items[i][0]
        if errors[i] is None:
            try:
                os.replace(tmp, path)
            except OSError as exc:
                errors[i] = exc
            else:
                dirs[path.parent] = None
                continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    for directory in dirs:
        _fsync_dir(directory)
    return errors


def _open_tmp(tmp: str, directory: Path) -> int:
    """Create (truncate) a temp file, making its directory only when it is missing: the
    usual case costs one system call, not a mkdir that fails and a stat."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_BINARY
    try:
        return os.open(tmp, flags, 0o644)
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
        return os.open(tmp, flags, 0o644)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # no directory fds on Windows (as write_atomic_sync)
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_if_present_sync(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


async def read_if_present(path: Path) -> bytes | None:
    """The file's bytes as they are, or None when it is gone."""
    return await asyncio.get_running_loop().run_in_executor(None, read_if_present_sync, path)


def remove_sync(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def write_atomic(path: Path, data: bytes) -> None:
    await asyncio.get_running_loop().run_in_executor(None, write_atomic_sync, path, data)


async def remove(path: Path) -> None:
    await asyncio.get_running_loop().run_in_executor(None, remove_sync, path)


async def exists(path: Path) -> bool:
    return await asyncio.get_running_loop().run_in_executor(None, path.exists)


GRADIENT_SUFFIX = ".safetensors"


def remove_strays_sync(directory: Path, keep: Collection[str]) -> int:
    """Delete the gradient files of transactions not in `keep`, and temp files left by a
    killed write; returns how many. Run when no write is under way (at start).

    A gradient file is `<transaction id>.safetensors`; its temp files start with a dot and
    end in `.tmp` (both writers). Nothing else in `directory` is touched."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        name = entry.name
        stray_tmp = name.startswith(".") and name.endswith(".tmp") and GRADIENT_SUFFIX in name
        stray = name.endswith(GRADIENT_SUFFIX) and name[: -len(GRADIENT_SUFFIX)] not in keep
        if (stray_tmp or stray) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed


async def remove_strays(directory: Path, keep: Collection[str]) -> int:
    return await asyncio.get_running_loop().run_in_executor(
        None, remove_strays_sync, directory, keep
    )
