"""Runtime dependencies are bounded: a new major arrives by decision, not by a fresh clone."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


def _runtime() -> list[Requirement]:
    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    return [Requirement(text) for text in data["project"]["dependencies"]]


def test_every_runtime_dependency_has_an_upper_bound_or_a_pin() -> None:
    unbounded = [
        str(req)
        for req in _runtime()
        if not any(spec.operator in ("<", "<=", "==", "~=") for spec in req.specifier)
    ]
    assert unbounded == []


def test_prereleases_are_pinned_exactly() -> None:
    loose = [
        str(req)
        for req in _runtime()
        if any(spec.prereleases for spec in req.specifier)
        and [spec.operator for spec in req.specifier] != ["=="]
    ]
    assert loose == []


@pytest.mark.parametrize("req", _runtime(), ids=lambda r: r.name)
def test_the_installed_version_is_inside_the_bounds(req: Requirement) -> None:
    try:
        installed = version(req.name)
    except PackageNotFoundError:
        pytest.skip(f"{req.name} is not installed here")
    assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed}"
