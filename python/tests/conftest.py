"""Shared paths for the Python tests: the repository root and its transformers-written fixtures."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HF_FIXTURES = ROOT / "fixtures" / "hf"


@pytest.fixture
def hf_fixtures() -> Path:
    return HF_FIXTURES
