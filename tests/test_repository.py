"""The repository stands alone: no reference to notes outside it, every relative link in the Markdown resolves, one
version number."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
from pathlib import Path

import lcm_distill

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"DESIGN\.md|DESIGN §|\.\./shared/|shared/reference|diffusers-lcm-facts|shared/seeds")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    keep = (".py", ".md", ".txt", ".yaml", ".yml", ".toml", ".sh", ".cfg")
    return [ROOT / n for n in names if n.endswith(keep) and (ROOT / n).is_file()]


def test_no_reference_to_notes_outside_the_repository():
    files = [p for p in tracked_text_files() if p.name != "test_repository.py"]
    found = [f"{p.relative_to(ROOT)}:{i}" for p in files
             for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
             if OUTSIDE.search(line)]  # fmt: skip
    assert found == [], "cite docs/design.md (or move the fact there) instead: " + ", ".join(found)


def test_every_relative_markdown_link_resolves():
    broken = []
    for md in (p for p in tracked_text_files() if p.suffix == ".md"):
        for target in LINK.findall(md.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("/"):
                continue  # URLs and absolute paths are not the repository's
            if not (md.parent / target).exists():
                broken.append(f"{md.relative_to(ROOT)} -> {target}")
    assert broken == []


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_in_page_anchor_names_a_heading():
    broken = []
    for md in (p for p in tracked_text_files() if p.suffix == ".md"):
        text = md.read_text()
        anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
        broken += [f"{md.relative_to(ROOT)} -> #{a}" for a in re.findall(r"\]\(#([^)]+)\)", text) if a not in anchors]
    assert broken == []


def test_one_version_number():
    assert importlib.metadata.version("lcm-distill") == lcm_distill.__version__
