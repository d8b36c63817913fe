"""The committed ``--help`` text of every command (docs/cli/<command>.txt), rendered at a fixed width so the files
are stable; tests/test_cli_help.py fails when a flag changes and the text was not regenerated:

    python -m lcm_distill.cli.help --write     # after changing a flag
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

WIDTH = 100
DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli"


def _parsers() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    from . import cache, evaluate, generate, reference, split, train

    return {
        "train_lcd": lambda: train.build_parser("train_lcd.py", "lcd"),
        "train_lcf": lambda: train.build_parser("train_lcf.py", "lcf"),
        "lcm-distill-train": lambda: train.build_parser("lcm-distill-train"),
        "lcm-distill-cache": cache.build_parser,
        "lcm-distill-split": split.build_parser,
        "lcm-distill-generate": generate.build_parser,
        "lcm-distill-evaluate": evaluate.build_parser,
        "lcm-distill-reference": reference.build_parser,
    }


COMMANDS = ("train_lcd", "train_lcf", "lcm-distill-train", "lcm-distill-cache", "lcm-distill-split",
            "lcm-distill-generate", "lcm-distill-evaluate", "lcm-distill-reference")  # fmt: skip


def render(command: str) -> str:
    """``command --help`` at WIDTH columns (argparse reads COLUMNS)."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        return _parsers()[command]().format_help()
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lcm_distill.cli.help", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"rewrite the files under {DOCS}")
    args = ap.parse_args(argv)
    for command in COMMANDS:
        text = render(command)
        if args.write:
            DOCS.mkdir(parents=True, exist_ok=True)
            (DOCS / f"{command}.txt").write_text(text)
        else:
            print(f"$ {command} --help\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
