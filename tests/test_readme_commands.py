"""README.md against the CLI: every ``crm`` command it shows exists and takes the options it uses.

Only ``--help`` is run, so these tests are fast and need no data sets.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()
README = Path(__file__).resolve().parents[1] / "README.md"
SHARED = ("--device", "--weights", "--preset", "--ratios", "--tile-size", "--precision", "--threads", "--backend",
          "--json", "--quiet", "CRM_DEVICE", "CRM_WEIGHTS", "CRM_THREADS", "CRM_BACKEND")


def readme_commands(text: str) -> list[tuple[str, str]]:
    """(command, the rest of the line) for each ``crm CMD ...`` in a bash block or an inline code span."""
    found: list[tuple[str, str]] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("  #")[0].split("|"):
                if match := re.search(r"(?:^|\s)crm (\w+)(.*)", part.strip()):
                    found.append((match.group(1), match.group(2)))
    prose = re.sub(r"```.*?```", "", text, flags=re.S).replace("\n", " ")
    for span in re.findall(r"`([^`]+)`", prose):
        if match := re.match(r"crm (\w+)(.*)", span):
            found.append((match.group(1), match.group(2)))
    return found


def help_text(command: str) -> str:
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, f"README shows `crm {command}`, which does not exist: {result.output}"
    return result.output


def mentions(help_output: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_output) is not None


def test_readme_commands_and_their_options_exist() -> None:
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert {"refine", "batch", "coco", "score", "eval", "time", "compare", "info", "train"} <= {c for c, _ in commands}
    helps: dict[str, str] = {}
    missing = []
    for command, rest in commands:
        output = helps.setdefault(command, help_text(command))
        missing += [f"crm {command} {flag}" for flag in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", rest)
                    if not mentions(output, flag)]
    assert not missing, f"README uses options the CLI does not have: {missing}"


@pytest.mark.parametrize("command", ["refine", "batch", "coco", "eval", "time"])
def test_shared_options_as_the_readme_lists_them(command: str) -> None:
    output = help_text(command)
    assert [flag for flag in SHARED if not mentions(output, flag)] == []
    # README: --guard/--no-guard everywhere but coco, which keeps the preset's own trust region.
    assert mentions(output, "--no-guard") == (command != "coco")


def test_compare_help_names_its_arguments_like_the_readme() -> None:
    output = help_text("compare")
    assert "IMAGE COARSE REFINED [GT]" in output.replace("{", "").replace("}", "")
    assert "-o, --output FILE" in output and "--crops N" in output and "--crop-size N" in output
