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
    """The test split written as an imagefolder (the train split is not needed by these tests)."""
    from lcm_distill.testbed import write_imagefolder

    return write_imagefolder(tmp_path_factory.mktemp("digits"), splits=("test",))


@pytest.fixture(scope="session")
def test_split():
    from lcm_distill.testbed import build_split

    return build_split("test")
