"""crm train's 16-bit photo note: the readers end it with the option that fixes a sequence's scale,
which crm train does not have, so its note stops before naming it."""

from __future__ import annotations

from pathlib import Path

from conftest import flat
from test_photo_bits_s38 import write_frame, write_mask
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.imageio import read_image_noted
from crm_cli.photo_depth import cli_note

runner = CliRunner()
SCALE_NOTE_END = "the scale follows each file's values, so frames of one sequence can differ"


def test_cli_note_leaves_the_hint_off_for_a_command_without_the_option(tmp_path: Path) -> None:
    photo = tmp_path / "frame.png"
    write_frame(photo)
    (note,) = read_image_noted(photo)[2]
    assert note.endswith(SCALE_NOTE_END + ": photo_bits=N fixes it")
    assert cli_note(note, has_photo_bits=False) == note[: note.index(SCALE_NOTE_END) + len(SCALE_NOTE_END)]
    assert cli_note(note).endswith(SCALE_NOTE_END + ": --photo-bits N fixes it")
    other = f"{tmp_path / 'x.gif'}: holds 2 frames; the first is used"
    assert cli_note(other, has_photo_bits=False) == other


def test_crm_train_does_not_name_photo_bits(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for k in range(3):
        write_frame(data / "images" / f"p{k}.png", seed=k)
        write_mask(data / "masks" / f"p{k}.png", seed=k)
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "1",
                                 "--batch", "2", "--init", "random", "--threads", "1", "--val-images", "1",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    stderr = flat(result.stderr)
    assert SCALE_NOTE_END in stderr and "photo-bits" not in stderr and "photo_bits" not in stderr
    # The command that has the option still names it.
    refined = runner.invoke(app, ["refine", str(data / "images" / "p0.png"), str(data / "masks" / "p0.png"),
                                  "-o", str(tmp_path / "out.png"), "-d", "cpu", "--preset", "fast"])
    assert refined.exit_code == 0, refined.output
    assert SCALE_NOTE_END + ": --photo-bits N fixes it" in flat(refined.stderr)
