"""A journal file that is not a journal: a clear error naming the file, the file untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from r3mes_desktop.core.errors import IntegrityError
from r3mes_desktop.core.journal import Journal


async def test_a_file_that_is_not_a_database_names_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    garbage = b"this is not sqlite" * 100
    path.write_bytes(garbage)
    journal = Journal(path)
    with pytest.raises(IntegrityError) as info:
        await journal.open()
    await journal.close()
    assert str(path) in info.value.message
    assert "not a database" in info.value.message
    assert path.read_bytes() == garbage  # nothing overwritten: it may be evidence
