"""Fixtures for the testbed: the committed assets folder and a rendered test split."""

from __future__ import annotations

from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "testbed"


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    if not (ASSETS / "teacher-eps" / "model_index.json").exists():
        pytest.fail(f"{ASSETS} is missing the committed teachers; regenerate with python -m lcm_distill.testbed.build")
    return ASSETS


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """The test split written by the render command (the train split is not needed by these tests)."""
    from lcm_distill.testbed.render import main

    out = tmp_path_factory.mktemp("digits")
    assert main(["--out", str(out), "--splits", "test"]) == 0
    return out


@pytest.fixture(scope="session")
def test_split():
    from lcm_distill.testbed import build_split

    return build_split("test")
