"""Every test is in exactly one tier: unit (pure), db (PostgreSQL) or e2e (processes and the rest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DB_FIXTURES, E2E_MODULES, TIERS


def test_every_collected_test_has_exactly_one_tier_marker(request: pytest.FixtureRequest) -> None:
    wrong = {
        item.nodeid: tiers
        for item in request.session.items
        if len(tiers := [mark.name for mark in item.iter_markers() if mark.name in TIERS]) != 1
    }
    assert wrong == {}


def test_no_unit_test_uses_the_database(request: pytest.FixtureRequest) -> None:
    in_unit = [item for item in request.session.items if item.get_closest_marker("unit")]
    assert [item.nodeid for item in in_unit if DB_FIXTURES & set(getattr(item, "fixturenames", ()))] == []


def test_every_e2e_module_exists() -> None:
    here = Path(__file__).parent
    assert sorted(name for name in E2E_MODULES if not (here / f"{name}.py").exists()) == []
