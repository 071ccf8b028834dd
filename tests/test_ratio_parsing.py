"""Stage ratios have one parser (presets.check_ratios) and one set of rules and messages, whether
they come as ``--ratios`` (a usage error, exit 2) or through the Python API (a ValueError)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import write_scene_files
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.presets import PRESETS, check_ratios

runner = CliRunner()

EMPTY_ITEM = "ratios must be comma-separated, with no empty item; got {!r}"
NOT_NUMBERS = 'ratios must be numbers, e.g. "0.5,1"; got {!r}'

# (ratios as the user types them, the error every entry point gives)
BAD_TEXT: list[tuple[str, str]] = [
    ("0.5,,1", EMPTY_ITEM.format("0.5,,1")),
    ("0.5,1,", EMPTY_ITEM.format("0.5,1,")),
    (",0.5,1", EMPTY_ITEM.format(",0.5,1")),
    (",", EMPTY_ITEM.format(",")),
    ("", EMPTY_ITEM.format("")),
    ("  ", EMPTY_ITEM.format("  ")),
    ("0.5, ,1", EMPTY_ITEM.format("0.5, ,1")),
    ("0.5,x", NOT_NUMBERS.format("0.5,x")),
    ("0.5;1", NOT_NUMBERS.format("0.5;1")),
    ("1/2,1", NOT_NUMBERS.format("1/2,1")),
    ("nan", "ratios must be in (0, 1]: (nan,)"),
    ("0.5,NaN", "ratios must be in (0, 1]: (0.5, nan)"),
    ("0.5,inf", "ratios must be in (0, 1]: (0.5, inf)"),
    ("0,1", "ratios must be in (0, 1]: (0.0, 1.0)"),
    ("-0.5,1", "ratios must be in (0, 1]: (-0.5, 1.0)"),
    ("0.5,1.5", "ratios must be in (0, 1]: (0.5, 1.5)"),
    ("1,0.5", "ratios must increase: (1.0, 0.5)"),
    ("0.5,0.5,1", "ratios must increase: (0.5, 0.5, 1.0)"),
]

GOOD_TEXT: list[tuple[str, tuple[float, ...]]] = [
    ("0.125,0.25,0.5,1", (0.125, 0.25, 0.5, 1.0)),
    (" 0.25, 0.5 ,1 ", (0.25, 0.5, 1.0)),
    ("1", (1.0,)),
    ("1e-1,1", (0.1, 1.0)),
]


@pytest.mark.parametrize(("text", "message"), BAD_TEXT)
def test_check_ratios_refuses_bad_text_with_the_rules_message(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_ratios(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(("text", "message"), BAD_TEXT)
def test_a_preset_with_bad_ratio_text_gives_the_same_error(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        PRESETS["balanced"].with_ratios(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(("text", "ratios"), GOOD_TEXT)
def test_good_ratio_text_is_read_as_floats(text: str, ratios: tuple[float, ...]) -> None:
    assert check_ratios(text) == ratios
    preset = PRESETS["auto"].with_ratios(text)
    assert preset.ratios == ratios and not preset.adaptive


@pytest.mark.parametrize(("ratios", "message"), [
    ((), "at least one ratio is needed"),
    (("a", 1.0), "ratios must be numbers, e.g. (0.5, 1); got ('a', 1.0)"),
    ((None,), "ratios must be numbers, e.g. (0.5, 1); got (None,)"),
    ((math.nan,), "ratios must be in (0, 1]: (nan,)"),
    ((0.0, 1.0), "ratios must be in (0, 1]: (0.0, 1.0)"),
    ((0.5, 0.25), "ratios must increase: (0.5, 0.25)"),
])
def test_bad_ratio_sequences_follow_the_same_rules(ratios: tuple, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_ratios(ratios)
    assert str(caught.value) == message


def test_sequences_and_text_give_the_same_ratios() -> None:
    assert check_ratios([0.5, 1]) == check_ratios((0.5, 1.0)) == check_ratios("0.5,1") == (0.5, 1.0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny image and its coarse mask on disk."""
    return write_scene_files(tmp_path_factory.mktemp("pair"))


@pytest.mark.parametrize(("text", "message"), BAD_TEXT)
def test_bad_ratios_option_is_a_usage_error_with_the_same_message(text: str, message: str, pair: tuple[Path, Path],
                                                                  tmp_path: Path, tiny_weights: Path) -> None:
    output = tmp_path / "o.png"
    result = runner.invoke(app, ["refine", str(pair[0]), str(pair[1]), "-o", str(output), "-w", str(tiny_weights),
                                 "-d", "cpu", "--ratios", text, "--json"])
    assert result.exit_code == 2, result.output
    assert not output.exists()
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: Invalid value for '--ratios': {message}"], result.stderr
    # --json: the failure record of the same usage error, as for a runtime failure.
    assert json.loads(result.stdout) == {"image": str(pair[0]), "mask": str(pair[1]), "output": str(output),
                                         "status": "failed", "error": f"Invalid value for '--ratios': {message}",
                                         "warnings": []}


def test_the_refiner_refuses_bad_ratio_text_with_the_same_message(tiny_weights: Path) -> None:
    from conftest import synthetic_scene

    from crm_cli.engine import Refiner

    refiner = Refiner(tiny_weights, device="cpu")
    image, mask = synthetic_scene(96, 128)
    for text, message in BAD_TEXT:
        with pytest.raises(ValueError) as caught:
            refiner.refine(image, mask, ratios=text)
        assert str(caught.value) == message, text
    assert isinstance(refiner.refine(image, mask, ratios=" 0.5, 1"), np.ndarray)
