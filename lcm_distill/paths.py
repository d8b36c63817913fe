"""Where this checkout's bundled assets are (torch-free): the digits testbed's teachers and classifier. Commands
resolve them here, not against the working folder, so they work when run from anywhere."""

from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
TESTBED_DIR = CHECKOUT / "assets" / "testbed"  # teacher-eps/, teacher-v/, classifier/ (lcm_distill.testbed.build)


def is_testbed_reference(reference: str | Path | None) -> bool:
    """A reference folder rendered by lcm_distill.testbed.render (it holds testbed.json): its images are judged with
    the testbed classifier's features rather than Inception's ("auto" in evaluate and the quality signal)."""
    return reference is not None and (Path(reference) / "testbed.json").exists()
