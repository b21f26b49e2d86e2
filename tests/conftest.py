from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Dense checkpoints go to a per-session folder, never the user's cache."""
    monkeypatch.setenv("PRUNESEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def cli_env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
