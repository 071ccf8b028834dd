"""Pins of the command-line surface found by a mutation review (s63): each test guards one rule that
no other test held (a usage error's exit code and range, a JSON field, a message naming a file, a
rounding), on tiny inputs and in process where a process is not needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from command_lines import command_inputs
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()


def cpu(weights: Path) -> list[str]:
    """The options that load the tiny test weights on the CPU."""
    return ["-w", str(weights), "-d", "cpu", "--threads", "1"]


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """A pair, a BIG-layout folder and a one-instance COCO file, all tiny (command_lines.command_inputs)."""
    return command_inputs(tmp_path)


def error_lines(result) -> list[str]:  # noqa: ANN001 - click's Result
    """The ``error:`` lines of a run's stderr."""
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


# options.py ------------------------------------------------------------------------------------------------------


def test_label_id_zero_is_accepted() -> None:
    """--labels takes id 0 (ids >= 0), and refuses a negative id."""
    from crm_cli.cli.options import parse_labels

    assert parse_labels("0,3") == [0, 3]
    with pytest.raises(typer.BadParameter, match=">= 0"):
        parse_labels("-1")


def test_an_infinite_min_area_is_a_usage_error(inputs: dict[str, Path], tiny_weights: Path) -> None:
    """crm coco --min-area inf: exit 2 naming the option (finite_option refuses infinity, not only NaN)."""
    result = runner.invoke(app, ["coco", str(inputs["coco"]), "--images", str(inputs["images"]),
                                 "-o", str(inputs["out"] / "o.json"), *cpu(tiny_weights), "--min-area", "inf"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert any("--min-area" in line and "finite" in line for line in error_lines(result)), result.stderr
    assert not inputs["out"].exists()


def test_threshold_one_is_a_usage_error(inputs: dict[str, Path], tiny_weights: Path) -> None:
    """crm refine -t 1: exit 2 (every mask would be empty), no output written."""
    out = inputs["out"] / "o.png"
    result = runner.invoke(app, ["refine", str(inputs["image"]), str(inputs["mask"]), "-o", str(out),
                                 *cpu(tiny_weights), "-t", "1"])
    assert result.exit_code == 2, result.output
    assert any("below 1" in line for line in error_lines(result)), result.stderr
    assert not out.exists()


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_onnx_backend_refuses_every_reduced_precision(precision: str) -> None:
    """--backend onnx with --precision fp16 or bf16: exit 2 before anything loads."""
    from crm_cli.cli.options import Backend, Precision, RefinerOptions

    options = RefinerOptions(backend=Backend.onnx, precision=Precision(precision), device="cpu")
    with pytest.raises(typer.Exit) as stop:
        options.check_backend()
    assert stop.value.exit_code == 2


def test_an_output_folder_that_is_a_device_is_a_usage_error(inputs: dict[str, Path], tiny_weights: Path) -> None:
    """crm batch -o /dev/null: exit 2, "is a file, not a folder" (any non-folder, not only a regular file)."""
    result = runner.invoke(app, ["batch", str(inputs["big"]), "-o", "/dev/null", *cpu(tiny_weights)])
    assert result.exit_code == 2, result.output
    assert any("/dev/null is a file, not a folder" in line for line in error_lines(result)), result.stderr


def test_a_file_given_as_the_input_folder_is_a_usage_error(inputs: dict[str, Path], tiny_weights: Path) -> None:
    """crm batch FILE: exit 2, "FILE is a file, not a folder", nothing written."""
    result = runner.invoke(app, ["batch", str(inputs["image"]), "-o", str(inputs["out"]), *cpu(tiny_weights)])
    assert result.exit_code == 2, result.output
    assert any(f"{inputs['image']} is a file, not a folder" in line for line in error_lines(result)), result.stderr
    assert not inputs["out"].exists()


def test_a_bad_crm_device_names_the_variable(inputs: dict[str, Path], tiny_weights: Path) -> None:
    """A bad CRM_DEVICE (no --device typed): exit 2, the error names the variable; a bad -d does not."""
    line = ["refine", str(inputs["image"]), str(inputs["mask"]), "-o", str(inputs["out"] / "o.png"),
            "-w", str(tiny_weights)]
    from_env = runner.invoke(app, line, env={"CRM_DEVICE": "tpu"})
    assert from_env.exit_code == 2, from_env.output
    assert any("CRM_DEVICE" in line for line in error_lines(from_env)), from_env.stderr
    typed = runner.invoke(app, [*line, "-d", "tpu"], env={"CRM_DEVICE": "cpu"})
    assert typed.exit_code == 2, typed.output
    assert not any("CRM_DEVICE" in line for line in error_lines(typed)), typed.stderr


@pytest.mark.parametrize(("option", "value"), [("--tile-size", "127"), ("--tile-size", "64"), ("--threads", "-1")])
def test_option_ranges_are_usage_errors(option: str, value: str, inputs: dict[str, Path], tiny_weights: Path) -> None:
    """--tile-size under 128 and --threads under 0: exit 2 naming the option, nothing on stdout."""
    out = inputs["out"] / "o.png"
    result = runner.invoke(app, ["refine", str(inputs["image"]), str(inputs["mask"]), "-o", str(out),
                                 "-w", str(tiny_weights), "-d", "cpu", option, value])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert any(option in line for line in error_lines(result)), result.stderr


def test_batch_output_dash_is_a_usage_error(inputs: dict[str, Path], tiny_weights: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """crm batch -o -: exit 2 (stdout cannot take a folder of masks), no folder named "-" made."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["batch", str(inputs["big"]), "-o", "-", *cpu(tiny_weights)])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert any("give a folder name" in line for line in error_lines(result)), result.stderr
    assert not Path("-").exists()


# outputs.py ------------------------------------------------------------------------------------------------------


def test_contour_thickness_rounds_to_nearest() -> None:
    """The overlay's line width is (H + W) / 1000 rounded to the nearest pixel, at least 1."""
    from crm_cli.outputs import contour_thickness

    assert contour_thickness(40, 50) == 1
    assert contour_thickness(600, 1000) == 2  # 1.6
    assert contour_thickness(1200, 1500) == 3  # 2.7
    assert contour_thickness(1000, 1300) == 2  # 2.3


def test_the_api_takes_threshold_one() -> None:
    """render_output's threshold range is [0, 1] inclusive (only the CLI's -t refuses 1): T = 1 cuts all."""
    from crm_cli.outputs import check_rendering, render_output

    check_rendering("binary", 1.0)
    check_rendering("binary", 0.0)
    assert render_output("binary", np.array([[0.0, 1.0]]), threshold=1.0).tolist() == [[0, 0]]
    with pytest.raises(ValueError, match="threshold"):
        check_rendering("binary", 1.0001)


# errors.py -------------------------------------------------------------------------------------------------------


def test_count_noun_pluralises_zero() -> None:
    """count_noun: "0 masks", "1 mask", "2 masks"."""
    from crm_cli.errors import count_noun

    assert [count_noun(n, "mask") for n in (0, 1, 2)] == ["0 masks", "1 mask", "2 masks"]


def test_out_of_memory_advice_is_added_unless_the_last_clause_advises() -> None:
    """A MemoryError's line gets MEMORY_ADVICE unless a "; try ..." clause ends it (not a text starting so)."""
    from crm_cli.errors import MEMORY_ADVICE, out_of_memory_message

    assert out_of_memory_message(MemoryError("try again later")) == "try again later" + MEMORY_ADVICE
    assert out_of_memory_message(MemoryError("free memory: 0 bytes")) == "free memory: 0 bytes" + MEMORY_ADVICE
    assert out_of_memory_message(MemoryError("too big; try --tile-size 512")) == "too big; try --tile-size 512"
    assert out_of_memory_message(MemoryError()) == "out of memory" + MEMORY_ADVICE


def test_a_torch_error_type_reads_as_continued_lines() -> None:
    """failure_text: an error of torch's own type (not only RuntimeError) keeps its lines, indented."""
    from crm_cli.errors import ContinuedText, failure_text

    torch_error = type("AcceleratorError", (RuntimeError,), {"__module__": "torch.cuda"})
    text = failure_text(torch_error("CUDA error: an illegal memory access\n\nFor debugging pass X=1\n"))
    assert isinstance(text, ContinuedText)
    assert text == "CUDA error: an illegal memory access\n  For debugging pass X=1"
    own = type("PairError", (ValueError,), {})
    assert failure_text(own("a\nb.png: bad")) == "a\nb.png: bad"  # crm's own: a name's line break, not a line


# naming.py -------------------------------------------------------------------------------------------------------


def test_unknown_formats_rank_after_every_mask_format() -> None:
    """format_rank puts an extension crm does not list after all of MASK_EXTENSIONS (a .png is preferred)."""
    from crm_cli.naming import MASK_EXTENSIONS, format_rank, preferred_file

    assert format_rank(".exr") == len(MASK_EXTENSIONS)
    notes: list[str] = []
    assert preferred_file([Path("a.exr"), Path("a.gif"), Path("a.png")], notes) == Path("a.png")
    assert notes[-1].startswith("a.exr ignored")


def test_a_mask_suffix_needs_a_name_before_it() -> None:
    """mask_suffix: "frame_MASK" ends in _mask, "_mask" alone is a name, not a mask of one."""
    from crm_cli.naming import mask_suffix

    assert mask_suffix("frame_MASK") == "_mask"
    assert mask_suffix("_mask") is None
    assert mask_suffix(".Matte") is None


def test_a_decimal_fraction_is_no_frame_number() -> None:
    """last_number_span/number_key: crop_0.05 and v1.02 keep their zeros; plate.0007 is frame 7."""
    from crm_cli.naming import last_number_span, number_key

    assert last_number_span("crop_0.05") is None
    assert last_number_span("v1.02") is None
    assert last_number_span("plate.0007") == (6, 10)
    assert number_key(Path("crop_0.05")) == "crop_0.05"
    assert number_key(Path("Plate.0007")) == "plate.7"


def test_an_all_zero_frame_number_reads_as_zero() -> None:
    """number_key: take_000 is take_0 (frame 0), not take_ (a name with no number)."""
    from crm_cli.naming import number_key

    assert number_key(Path("take_000")) == "take_0"
    assert number_key(Path("take_000")) == number_key(Path("take_0"))
    assert number_key(Path("take_000")) != number_key(Path("take_"))


# pair_inputs.py --------------------------------------------------------------------------------------------------


def test_lies_under_compares_whole_folder_names() -> None:
    """lies_under: /a/masks2 is not under /a/masks (a name that starts the same is another folder)."""
    from crm_cli.pair_inputs import lies_under

    assert lies_under("/a/masks", "/a/masks")
    assert lies_under("/a/masks/x.png", "/a/masks/")
    assert not lies_under("/a/masks2", "/a/masks")
    assert not lies_under("/a/masks2/x.png", "/a/masks")
    assert not lies_under("/a/masks", None)


def test_only_broken_links_of_the_formats_asked_for_are_listed(tmp_path: Path) -> None:
    """walk_folder lists a link to a missing .png as broken, not one to a missing .txt."""
    from crm_cli.pair_inputs import walk_folder

    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    walked = walk_folder(tmp_path, (".png",))
    assert walked.files == [tmp_path / "a.png"]
    assert walked.broken == [tmp_path / "gone.png"]


# pairing_hints.py ------------------------------------------------------------------------------------------------


def test_listed_counts_only_the_items_past_the_limit() -> None:
    """listed: exactly ``limit`` items are all named with no "more"; one past it says "(1 more)"."""
    from crm_cli.pairing_hints import MAX_LISTED, listed

    assert listed(list(range(3)), 3) == "0, 1, 2"
    assert listed(list(range(4)), 3) == "0, 1, 2, ... (1 more)"
    assert "more" not in listed(list(range(MAX_LISTED)))



def test_a_name_in_three_formats_gets_no_two_formats_hint(tmp_path: Path) -> None:
    """two_formats_hint speaks of names held in exactly two formats: a name in three is one photo."""
    import cv2

    from crm_cli.pairing_hints import two_formats_hint

    for suffix in (".jpg", ".png", ".tif"):
        cv2.imwrite(str(tmp_path / f"a{suffix}"), np.full((8, 8, 3), 90, np.uint8))
    three = {Path("a"): [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "a.tif"]}
    assert two_formats_hint(three, tmp_path) == ""
    two = {Path("a"): [tmp_path / "a.jpg", tmp_path / "a.png"]}
    assert "1 name has both a .jpg and a .png file" in two_formats_hint(two, tmp_path)


def test_a_lone_half_layout_hint_names_the_only_other_folder_or_folder(tmp_path: Path) -> None:
    """layout_hint: images/ and one other folder: that one is named as --masks; with two others, FOLDER."""
    from crm_cli.pairing_hints import layout_hint

    (tmp_path / "images").mkdir()
    (tmp_path / "mattes").mkdir()
    assert f"--masks {tmp_path / 'mattes'}" in layout_hint(tmp_path)
    (tmp_path / "alphas").mkdir()
    hint = layout_hint(tmp_path)
    assert f"--masks {tmp_path / 'FOLDER'}" in hint and "(beside it: alphas/, mattes/)" in hint


def test_a_photo_named_with_the_same_mask_words_gets_no_rename_note() -> None:
    """renamed_masks_note: a_mask_mask_0001 is no renamed mask of a_mask_0001 (whose name holds its mask words)."""
    from crm_cli.pair_inputs import LayoutInputs
    from crm_cli.pairing_hints import renamed_masks_note

    def layout(photo: str, mask: str) -> LayoutInputs:
        return LayoutInputs("folders", {Path(photo): [Path(f"images/{photo}.jpg")]},
                            {Path(mask): [Path(f"masks/{mask}.png")]}, ("",))

    same_words = layout("a_mask_0001", "a_mask_mask_0001")
    assert renamed_masks_note(same_words, [Path("a_mask_0001")], [Path("a_mask_mask_0001")], "(tried)") == []
    renamed = layout("plate.0001", "plate_matte.0001")
    note = renamed_masks_note(renamed, [Path("plate.0001")], [Path("plate_matte.0001")], "(tried)")
    assert len(note) == 1 and "plate_matte.0001.png -> plate.0001.png" in note[0]


# refine.py and checks.py -----------------------------------------------------------------------------------------


def test_refine_json_names_width_and_height_and_a_96_px_image_is_refined(tmp_path: Path, tiny_weights: Path) -> None:
    """crm refine --json on a 96x128 (HxW) pair: width 128, height 96, refined (96 px is the minimum side)."""
    from conftest import write_scene_files

    image, mask = write_scene_files(tmp_path, size=(96, 128))
    out = tmp_path / "o.png"
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(out), *cpu(tiny_weights), "--json", "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (record["width"], record["height"]) == (128, 96)
    assert record["passthrough"] is False and record["schedule"] is not None
    assert out.exists()


def test_refine_json_says_passthrough_for_an_image_under_96_px(tmp_path: Path, tiny_weights: Path) -> None:
    """crm refine --json on a 95-px-high image: "passthrough": true, the mask written as it is, with a warning."""
    from conftest import write_scene_files
    from PIL import Image

    image, mask = write_scene_files(tmp_path, size=(95, 130))
    out = tmp_path / "o.png"
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(out), *cpu(tiny_weights), "--json", "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["passthrough"] is True and record["schedule"] is None and record["device"] is None
    assert (record["width"], record["height"]) == (130, 95)
    assert any("under the 96-px minimum side" in warning for warning in record["warnings"])
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(mask)))


def test_refine_refuses_image_and_mask_both_from_stdin(tmp_path: Path, tiny_weights: Path) -> None:
    """crm refine - - -o OUT: exit 2, "only one of IMAGE and MASK can be read from stdin", nothing written."""
    out = tmp_path / "o.png"
    result = runner.invoke(app, ["refine", "-", "-", "-o", str(out), *cpu(tiny_weights)], input=b"\x89PNG")
    assert result.exit_code == 2, result.output
    assert any("only one of IMAGE and MASK" in line for line in error_lines(result)), result.stderr
    assert not out.exists()


def test_refine_refuses_an_output_naming_its_png_image(tmp_path: Path, tiny_weights: Path) -> None:
    """crm refine photo.png mask.png -o photo.png: exit 2 naming the image, the photo left as it was."""
    import cv2
    from conftest import coarse_of, synthetic_scene

    photo, gt = synthetic_scene(96, 128)
    image, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    cv2.imwrite(str(image), photo)
    cv2.imwrite(str(mask), coarse_of(gt))
    before = image.read_bytes()
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(image), *cpu(tiny_weights)])
    assert result.exit_code == 2, result.output
    assert any(f"is the image {image}" in line for line in error_lines(result)), result.stderr
    assert image.read_bytes() == before


# failures.py -----------------------------------------------------------------------------------------------------


def test_no_temp_folder_error_advises_tmpdir() -> None:
    """user_errors: tempfile's "No usable temporary directory" is exit 1 and tells to set TMPDIR."""
    from crm_cli.cli.failures import user_errors

    said: list[str] = []
    with pytest.raises(typer.Exit) as stop, user_errors(said.append):
        raise FileNotFoundError(2, "No usable temporary directory found in ['/tmp']")
    assert stop.value.exit_code == 1
    assert said == ["[Errno 2] No usable temporary directory found in ['/tmp']; set TMPDIR to a folder crm may write"]


def _raise_in_module(module: str, error: BaseException) -> BaseException:
    """``error`` as raised by code whose module is ``module`` (its traceback passes through that module)."""
    scope: dict[str, object] = {"__name__": module}
    exec("def fail(error):\n    raise error\n", scope)  # noqa: S102 - a frame of that module's name
    try:
        scope["fail"](error)  # type: ignore[operator]
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("not raised")


def test_torch_import_failure_recognises_torch_and_only_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch_import_failure: a missing torch submodule or an error raised inside torch.* is torch's import
    failing; one raised in torchvision (another package) is not."""
    import sys

    from crm_cli.cli import failures

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(failures, "_first_torch_failure", [])
    assert failures.torch_import_failure(_raise_in_module("torchvision.ops", OSError("libc10.so missing"))) is None
    missing = ImportError("libtorch_cpu.so: cannot open shared object file", name="torch._C")
    assert failures.torch_import_failure(missing) == "ImportError: libtorch_cpu.so: cannot open shared object file"
    monkeypatch.setattr(failures, "_first_torch_failure", [])
    inside = _raise_in_module("torch.cuda", OSError("libcudart.so.12: cannot open"))
    assert failures.torch_import_failure(inside) == "OSError: libcudart.so.12: cannot open"


def test_refine_dash_with_stdin_a_terminal_is_a_usage_error(tmp_path: Path, tiny_weights: Path) -> None:
    """crm refine - MASK with stdin a terminal: exit 2 at once ("pipe a file in"), not a wait for typing."""
    import os
    import subprocess
    import sys

    from conftest import write_scene_files

    _, mask = write_scene_files(tmp_path)
    leader, follower = os.openpty()
    try:
        result = subprocess.run([sys.executable, "-m", "crm_cli", "refine", "-", str(mask), "-o",
                                 str(tmp_path / "o.png"), *cpu(tiny_weights)],
                                stdin=follower, capture_output=True, text=True, timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 2, result.stderr
    assert "stdin is a terminal; pipe a file in" in result.stderr
    assert result.stdout == ""


def test_refine_mask_from_stdin_needs_an_output(tmp_path: Path, tiny_weights: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """crm refine IMAGE - (no -o): exit 2, "give -o OUT", no "-_refined.png" written."""
    from conftest import write_scene_files

    image, mask = write_scene_files(tmp_path / "pair")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["refine", str(image), "-", *cpu(tiny_weights)], input=mask.read_bytes())
    assert result.exit_code == 2, result.output
    assert any("give -o OUT (or -o -) when the mask comes from stdin" in line for line in error_lines(result))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["pair"]


def test_soft16_as_webp_is_a_usage_error(inputs: dict[str, Path], tiny_weights: Path) -> None:
    """crm refine -k soft16 -o x.webp: exit 2 before the model loads (WebP holds 8 bits), nothing written."""
    out = inputs["out"] / "o.webp"
    result = runner.invoke(app, ["refine", str(inputs["image"]), str(inputs["mask"]), "-o", str(out), "-k", "soft16",
                                 "-w", str(tiny_weights), "-d", "cpu"])
    assert result.exit_code == 2, result.output
    assert any("WebP holds 8 bits per channel" in line for line in error_lines(result)), result.stderr
    assert "device:" not in result.stderr and not out.exists()


def test_a_webp_output_over_16383_px_is_refused_before_the_model(tmp_path: Path, tiny_weights: Path) -> None:
    """crm refine on a 16400-px-wide pair with -o x.webp: exit 2 naming the limit, before the model loads."""
    import cv2

    image, mask = tmp_path / "strip.png", tmp_path / "strip_mask.png"
    cv2.imwrite(str(image), np.full((100, 16400, 3), 120, np.uint8))
    cv2.imwrite(str(mask), np.zeros((100, 16400), np.uint8))
    out = tmp_path / "o.webp"
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(out), *cpu(tiny_weights)])
    assert result.exit_code == 2, result.output
    assert any("WebP holds at most 16383 px per side" in line and "16400x100" in line for line in error_lines(result))
    assert "device:" not in result.stderr and not out.exists()


def test_an_output_folder_that_is_a_file_is_named_so(tmp_path: Path) -> None:
    """unwritable_reason(folder=True) of an existing file: "cannot write into F: it is a file, not a folder"."""
    from crm_cli.cli.checks import unwritable_reason

    target = tmp_path / "out"
    target.write_text("x")
    assert unwritable_reason(target, folder=True) == f"cannot write into {target}: it is a file, not a folder"


def test_a_broken_pipe_while_ctrl_c_unwinds_is_the_interrupt(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """user_errors leaves a BrokenPipeError raised during a Ctrl-C to stops_cleanly: exit 130 and no failure
    record or "stdout closed" error line (the stop line alone)."""
    from crm_cli.cli import failures
    from crm_cli.cli.stops import stops_cleanly

    monkeypatch.setattr(failures, "discard_stdout", lambda: None)
    said: list[str] = []
    with pytest.raises(typer.Exit) as stop, stops_cleanly(), failures.user_errors(said.append):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise BrokenPipeError(32, "Broken pipe") from None
    assert stop.value.exit_code == 130
    assert said == []
    assert "error:" not in capsys.readouterr().err


# group.py --------------------------------------------------------------------------------------------------------


def test_an_empty_path_is_a_usage_error(inputs: dict[str, Path], tiny_weights: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """-o "" (an unset shell variable) and an empty FOLDER: exit 2, "an empty path", nothing written in the cwd."""
    monkeypatch.chdir(tmp_path)
    refine = runner.invoke(app, ["refine", str(inputs["image"]), str(inputs["mask"]), "-o", "", *cpu(tiny_weights)])
    batch = runner.invoke(app, ["batch", "", "-o", str(inputs["out"]), *cpu(tiny_weights)])
    for result in (refine, batch):
        assert result.exit_code == 2, result.output
        assert any("an empty path" in line for line in error_lines(result)), result.stderr
    assert not inputs["out"].exists()


def test_input_files_readability_is_left_to_crm(inputs: dict[str, Path], tiny_weights: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Click's own "is not readable" usage error (exit 2) is off for input files: crm opens them and names
    an unreadable one as a missing one (exit 1); a file os.access calls unreadable but that opens is refined."""
    import os

    real_access = os.access
    image = str(inputs["image"])

    def access(path, mode, *args, **kwargs):  # noqa: ANN001, ANN202 - os.access's own signature
        if os.fspath(path) == image and mode & os.R_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    out = inputs["out"] / "o.png"
    result = runner.invoke(app, ["refine", image, str(inputs["mask"]), "-o", str(out), *cpu(tiny_weights), "-q"])
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_version_to_a_full_stdout_is_one_error_line(tmp_path: Path) -> None:
    """crm --version > /dev/full: exit 1, one "cannot write to standard output" line, no traceback."""
    import subprocess
    import sys

    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "crm_cli", "--version"], stdout=full, stderr=subprocess.PIPE,
                                text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: cannot write to standard output")


# compare.py and timing.py ----------------------------------------------------------------------------------------


def test_compare_crops_over_16_is_a_usage_error(inputs: dict[str, Path]) -> None:
    """crm compare --crops 17: exit 2 naming the option, no strip written."""
    out = inputs["out"] / "cmp.png"
    result = runner.invoke(app, ["compare", str(inputs["image"]), str(inputs["mask"]), str(inputs["mask"]),
                                 "-o", str(out), "--crops", "17"])
    assert result.exit_code == 2, result.output
    assert any("--crops" in line for line in error_lines(result)), result.stderr
    assert not out.exists()


def test_time_size_parses_width_by_height_from_16_px() -> None:
    """crm time --size WxH: (height, width) from 16x16 up; a side under 16 is a usage error."""
    from crm_cli.cli.timing import parse_size

    assert parse_size("3840x2160") == (2160, 3840)
    assert parse_size("16X16") == (16, 16)
    for bad in ("16x15", "15x16"):
        with pytest.raises(typer.BadParameter, match="at least 16x16"):
            parse_size(bad)
