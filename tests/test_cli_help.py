"""Every command's --help equals its committed text in docs/cli/ (python -m lcm_distill.cli.help --write)."""

import pytest

from lcm_distill.cli import help as cli_help


def test_every_command_has_a_committed_help_text():
    assert sorted(p.stem for p in cli_help.DOCS.glob("*.txt")) == sorted(cli_help.COMMANDS)


@pytest.mark.parametrize("command", cli_help.COMMANDS)
def test_help_text_matches_the_committed_one(command):
    committed = (cli_help.DOCS / f"{command}.txt").read_text()
    assert cli_help.render(command) == committed, (
        f"docs/cli/{command}.txt is stale: run `python -m lcm_distill.cli.help --write` and commit the result"
    )


def test_pre_commit_runs_the_ruff_that_ci_runs():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    repos = yaml.safe_load((root / ".pre-commit-config.yaml").read_text())["repos"]
    hooks = [h for repo in repos for h in repo["hooks"]]
    assert any(h["entry"].startswith("ruff check") for h in hooks)
    assert "ruff\" check ." in (root / "scripts" / "test.sh").read_text()
