"""`crm batch` resuming by the settings each output was made with (audit s34): every output records
what shaped it (a short JSON in a PNG text chunk, read without decoding the image); one made with other
settings is refined again, with one warning counting them, and options that make the same pixels are the
same settings. And `-o -` is a usage error, not a folder named "-" (which `-o ./-` names)."""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from batch_records import record_of, stamps_of
from conftest import flat, write_scene_files
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()
OTHER = ("were made with other settings (mode, labels, output kind, threshold, photo bits, preset, "
          "ratios, guard, edge snap or weights; outputs made before the edge snap have none)")


def batch_args(data: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return ["batch", str(data), "-o", str(out), "-w", str(weights), "-d", "cpu", *extra]


def four_pairs(data: Path, size: tuple[int, int] = (96, 128)) -> list[str]:
    for k in range(4):
        write_scene_files(data, f"p{k}_im", f"p{k}_seg", size=size, seed=k)
    return [f"p{k}_mask.png" for k in range(4)]


def modes(out: Path, names: list[str]) -> list[str]:
    return [Image.open(out / name).mode for name in names]


def summary_of(result) -> dict:  # noqa: ANN001
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cut_outs_rerun_as_soft_masks_are_refined_again_with_one_warning(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    names = four_pairs(data)
    assert runner.invoke(app, batch_args(data, out, tiny_weights, "-k", "cutout")).exit_code == 0
    assert modes(out, names) == ["RGBA"] * 4

    dry = summary_of(runner.invoke(app, batch_args(data, out, tiny_weights, "-k", "soft", "--dry-run", "--json")))
    assert [item["status"] for item in dry["items"]] == ["todo"] * 4 and dry["todo"] == 4
    assert modes(out, names) == ["RGBA"] * 4  # a dry run writes nothing

    result = runner.invoke(app, batch_args(data, out, tiny_weights, "-k", "soft", "--json"))
    summary = summary_of(result)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (4, 0, 0)
    assert [item["status"] for item in summary["items"]] == ["ok"] * 4
    assert modes(out, names) == ["L"] * 4
    stderr = flat(result.stderr)
    assert stderr.count("made with other settings") == 1
    assert f"warning: 4 outputs {OTHER}: refined again (e.g. {out / names[0]})" in stderr
    labels = runner.invoke(app, batch_args(data, out, tiny_weights, "--mode", "labels", "--dry-run"))
    assert labels.exit_code == 0, labels.output
    assert f"warning: 4 outputs {OTHER}: would be refined again (e.g. {out / names[0]})" in flat(labels.stderr)

    stamps = [(out / name).stat().st_mtime_ns for name in names]
    again = runner.invoke(app, batch_args(data, out, tiny_weights, "-k", "soft", "--json"))
    assert (summary_of(again)["done"], summary_of(again)["skipped"]) == (0, 4)
    assert "other settings" not in again.stderr
    assert [(out / name).stat().st_mtime_ns for name in names] == stamps


def test_an_output_without_a_settings_record_is_done_as_before(tiny_weights: Path, tmp_path: Path) -> None:
    """An output an older crm (or another tool) wrote has no record: it is judged as before, by its
    completeness and times only."""
    from crm_cli.cli.batch import SETTINGS_KEYWORD
    from crm_cli.imageio import read_mask
    from crm_cli.writing import read_png_text, write_png

    data, out = tmp_path / "data", tmp_path / "out"
    names = four_pairs(data)
    assert runner.invoke(app, batch_args(data, out, tiny_weights, "-k", "cutout")).exit_code == 0
    for name in names:
        assert read_png_text(out / name, SETTINGS_KEYWORD) is not None
        write_png(out / name, np.asarray(Image.open(out / name)))  # the same pixels, no record
        assert read_png_text(out / name, SETTINGS_KEYWORD) is None
    before = [read_mask(out / name).values.tobytes() for name in names]
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "-k", "soft", "--json"))
    assert (summary_of(result)["done"], summary_of(result)["skipped"]) == (0, 4)
    assert "other settings" not in result.stderr
    assert modes(out, names) == ["RGBA"] * 4
    assert [read_mask(out / name).values.tobytes() for name in names] == before


def test_a_settings_change_stopped_half_way_resumes_where_it_stopped(tiny_weights: Path, tmp_path: Path) -> None:
    data, out, fresh = tmp_path / "data", tmp_path / "out", tmp_path / "fresh"
    names = four_pairs(data)
    assert runner.invoke(app, batch_args(data, out, tiny_weights, "-k", "cutout")).exit_code == 0
    assert runner.invoke(app, batch_args(data, fresh, tiny_weights, "-k", "soft")).exit_code == 0
    for name in names[:2]:  # what a -k soft run stopped after two pairs leaves: two new, two old
        shutil.copy(fresh / name, out / name)
    assert modes(out, names) == ["L", "L", "RGBA", "RGBA"]

    result = runner.invoke(app, batch_args(data, out, tiny_weights, "-k", "soft", "--json"))
    summary = summary_of(result)
    assert {item["name"]: item["status"] for item in summary["items"]} == {"p0": "skipped", "p1": "skipped",
                                                                          "p2": "ok", "p3": "ok"}
    assert f"warning: 2 outputs {OTHER}: refined again (e.g. {out / names[2]})" in flat(result.stderr)
    assert [(out / name).read_bytes() for name in names] == [(fresh / name).read_bytes() for name in names]

    # Switching back redoes all four, and finishing that leaves nothing to do.
    back = runner.invoke(app, batch_args(data, out, tiny_weights, "-k", "cutout", "--json"))
    assert (summary_of(back)["done"], summary_of(back)["skipped"]) == (4, 0)
    assert modes(out, names) == ["RGBA"] * 4
    assert summary_of(runner.invoke(app, batch_args(data, out, tiny_weights, "-k", "cutout", "--json")))["done"] == 0


def test_other_weights_redo_refined_outputs_but_not_masks_passed_through(tiny_weights: Path, tmp_path: Path) -> None:
    """Weights without a sidecar are named by their file's path, size and time; a mask passed through
    unchanged (its image too small to refine) is made by no weights, so only its rendering counts."""
    data, out = tmp_path / "data", tmp_path / "out"
    four_pairs(data)
    write_scene_files(data, "small_im", "small_seg", size=(40, 60), seed=9)  # under 96 px: passed through
    bare = tmp_path / "bare.safetensors"
    bare.write_bytes(tiny_weights.read_bytes())  # no sidecar beside it
    assert runner.invoke(app, batch_args(data, out, tiny_weights)).exit_code == 0

    other = summary_of(runner.invoke(app, batch_args(data, out, bare, "--json")))
    assert {item["name"]: item["status"] for item in other["items"]} == {
        "p0": "ok", "p1": "ok", "p2": "ok", "p3": "ok", "small": "skipped"}
    assert summary_of(runner.invoke(app, batch_args(data, out, bare, "--json")))["done"] == 0
    os.utime(bare, ns=(1_700_000_000 * 10**9,) * 2)  # the same bytes, another modification time
    assert summary_of(runner.invoke(app, batch_args(data, out, bare, "--json")))["done"] == 4
    kind = summary_of(runner.invoke(app, batch_args(data, out, bare, "-k", "binary", "--json")))
    assert (kind["done"], kind["skipped"]) == (5, 0)


def test_a_job_checks_the_record_under_its_lock_as_the_scan_does(tmp_path: Path) -> None:
    """refine_pair_job, which Ray actors run too, writes the record and redoes an output made with
    other settings that another run finished meanwhile."""
    from crm_cli.cli.batch import SETTINGS_KEYWORD, OutputRecord, refine_pair_job
    from crm_cli.presets import PRESETS
    from crm_cli.writing import read_png_text

    image, mask = write_scene_files(tmp_path, "p_im", "p_seg", size=(40, 60))
    output = tmp_path / "out" / "p_mask.png"
    job = {"image": str(image), "mask": str(mask), "output": str(output), "name": "p", "image_name": str(image),
           "mask_name": str(mask), "passthrough": True}

    def run(kind: str) -> dict:
        record = OutputRecord.of(mode="auto", labels=None, output_kind=kind, threshold=None,
                                 settings=PRESETS["auto"], weights="w")
        outcome = refine_pair_job(None, job, settings=None, mode="auto", labels=None, output_kind=kind,
                                  threshold=None, record=record)
        assert read_png_text(output, SETTINGS_KEYWORD) == record.stamp("binary", "binary", True)
        return outcome

    assert run("soft")["status"] == "ok"
    assert run("soft")["status"] == "skipped"
    assert run("cutout")["status"] == "ok" and Image.open(output).mode == "RGBA"
    assert run("soft")["status"] == "ok" and Image.open(output).mode == "L"


def png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset of the data, length) of each chunk of PNG bytes."""
    chunks, offset = [], 8
    while offset < len(data):
        length = int.from_bytes(data[offset:offset + 4], "big")
        chunks.append((data[offset + 4:offset + 8], offset + 8, length))
        offset += 12 + length
    return chunks


def test_the_record_is_read_from_the_chunks_before_the_image_data_without_decoding_it(tmp_path: Path) -> None:
    from crm_cli.cli.batch import SETTINGS_KEYWORD, NotDoneReason, OutputRecord, counts_as_done
    from crm_cli.presets import PRESETS
    from crm_cli.writing import read_png_text, write_png

    path = tmp_path / "out.png"
    values = np.random.default_rng(0).integers(0, 256, (64, 48), dtype=np.uint8)
    write_png(path, values, icc_profile=b"\x00" * 600, text={"Comment": "other", SETTINGS_KEYWORD: "0123abcd"})
    data = bytearray(path.read_bytes())
    kinds = [kind for kind, _, _ in png_chunks(bytes(data))]
    assert kinds.index(b"iCCP") < kinds.index(b"tEXt") < kinds.index(b"IDAT")
    for kind, start, length in png_chunks(bytes(data)):
        if kind == b"IDAT":  # damage the image data: decoding it fails from now on
            data[start:start + length] = b"\xff" * length
    path.write_bytes(bytes(data))
    with pytest.raises((OSError, SyntaxError, ValueError, zlib.error)):
        Image.open(path).load()
    assert read_png_text(path, SETTINGS_KEYWORD) == "0123abcd"
    assert read_png_text(path, "Comment") == "other"
    assert read_png_text(path, "crm") is None  # a keyword is matched whole

    record = OutputRecord.of(mode="auto", labels=None, output_kind="soft", threshold=None,
                             settings=PRESETS["auto"], weights="w")
    assert counts_as_done(path, record=record) == (False, NotDoneReason.OTHER_SETTINGS)
    assert counts_as_done(path) == (True, None)  # no record to compare with: as before

    write_png(path, values)
    assert read_png_text(path, SETTINGS_KEYWORD) is None
    assert counts_as_done(path, record=record) == (True, None)

    # A damaged record (its CRC) is a damaged output: made again, saying why.
    write_png(path, values, text={SETTINGS_KEYWORD: record.stamp("binary", "binary", False)})
    assert counts_as_done(path, record=record) == (True, None)
    data = bytearray(path.read_bytes())
    start = next(start for kind, start, _ in png_chunks(bytes(data)) if kind == b"tEXt")
    data[start + len(SETTINGS_KEYWORD) + 1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="bad CRC"):
        read_png_text(path, SETTINGS_KEYWORD)
    assert counts_as_done(path, record=record) == (False, f"damaged {SETTINGS_KEYWORD!r} text chunk (bad CRC)")


def test_dash_as_the_output_folder_is_a_usage_error_before_the_model_loads(
        tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import crm_cli.refiner_spec

    def no_model(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(crm_cli.refiner_spec.RefinerSpec, "build", no_model)
    data = tmp_path / "data"
    four_pairs(data)
    monkeypatch.chdir(tmp_path)
    for extra in ((), ("--json",)):
        result = runner.invoke(app, ["batch", str(data), "-o", "-", "-w", str(tiny_weights), "-d", "cpu", *extra])
        assert result.exit_code == 2, result.output
        assert "not to standard output; give a folder name" in flat(result.stderr)
        assert not (tmp_path / "-").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]


def test_a_ray_batch_redoes_outputs_made_with_other_settings(tiny_weights: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    data, out = tmp_path / "data", tmp_path / "out"
    names = four_pairs(data)
    assert runner.invoke(app, batch_args(data, out, tiny_weights, "-k", "cutout")).exit_code == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = runner.invoke(app, batch_args(data, out, tiny_weights, "-k", "soft", "--json", "--ray", "local"))
    finally:
        ray.shutdown()
    assert (summary_of(result)["done"], summary_of(result)["skipped"]) == (4, 0)
    assert f"warning: 4 outputs {OTHER}: refined again" in flat(result.stderr)
    assert modes(out, names) == ["L"] * 4
    again = runner.invoke(app, batch_args(data, out, tiny_weights, "-k", "soft", "--json"))
    assert (summary_of(again)["done"], summary_of(again)["skipped"]) == (0, 4)  # the same record as a plain run


# Review of the record (s34): options that make the same pixels are the same settings; the record names
# what shaped each output, so a rerun spelling them otherwise skips everything, and says nothing.

def label_map_pairs(data: Path, count: int = 2) -> list[str]:
    """``count`` photos with grey label maps of ids 3 and 7 (read as label maps in auto mode)."""
    import cv2

    for k in range(count):
        _, mask = write_scene_files(data, f"m{k}_im", f"m{k}_seg", seed=k)
        ids = np.zeros((96, 128), np.uint8)
        ids[10:50, 10 + 4 * k:60], ids[40:90, 60:120 - 4 * k] = 3, 7
        cv2.imwrite(str(mask), ids)
    return [f"m{k}_mask.png" for k in range(count)]


def assert_all_skipped(result, out: Path, names: list[str], stamps: list[int]) -> None:  # noqa: ANN001
    summary = summary_of(result)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (0, len(names), 0)
    assert "other settings" not in result.stderr and "warning" not in result.stderr
    assert stamps_of(out, names) == stamps


@pytest.mark.parametrize(("first", "again"), [
    (("-k", "binary"), ("-k", "binary", "-t", "0.5")),
    (("-k", "binary", "-t", "0.5"), ("-t", "0.5")),
    (("-t", "0.5"), ("-k", "binary")),
    (("-k", "overlay"), ("-k", "overlay", "-t", "0.5")),
    ((), ("--labels", "3,7")),  # ignored by masks refined as one object
    (("--mode", "auto"), ("--mode", "binary")),
    (("--mode", "binary"), ("--mode", "auto")),
])
def test_equal_settings_spelled_otherwise_skip_binary_masks(tiny_weights: Path, tmp_path: Path,
                                                             first: tuple[str, ...], again: tuple[str, ...]) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    names = four_pairs(data)[:2]
    for path in [*data.glob("p2_*"), *data.glob("p3_*")]:
        path.unlink()
    write_scene_files(data, "small_im", "small_seg", size=(40, 60), seed=9)  # passed through
    names.append("small_mask.png")
    assert runner.invoke(app, batch_args(data, out, tiny_weights, *first)).exit_code == 0
    stamps = stamps_of(out, names)
    assert_all_skipped(runner.invoke(app, batch_args(data, out, tiny_weights, *again, "--json")), out, names, stamps)


def test_equal_settings_spelled_otherwise_skip_label_maps(tiny_weights: Path, tmp_path: Path) -> None:
    """--labels is a set without the background; a label map is written as a label image, so the
    output kind and threshold do not shape it; auto chooses labels for a label map."""
    import cv2

    data, out = tmp_path / "data", tmp_path / "out"
    names = label_map_pairs(data)
    _, small = write_scene_files(data, "small_im", "small_seg", size=(40, 60), seed=9)  # passed through
    small_ids = np.zeros((40, 60), np.uint8)
    small_ids[5:20, 5:30], small_ids[20:35, 30:55] = 3, 7
    cv2.imwrite(str(small), small_ids)
    assert runner.invoke(app, batch_args(data, out, tiny_weights, "--labels", "3,7")).exit_code == 0
    assert record_of(out / "small_mask.png") == {"version": 2, "mode": "labels", "auto": "labels", "passthrough": True}
    names.append("small_mask.png")
    assert [Image.open(out / name).mode for name in names] == ["L", "L", "L"]
    assert {int(v) for v in np.unique(np.asarray(Image.open(out / names[0])))} <= {0, 3, 7}
    stamps = stamps_of(out, names)
    for again in (("--labels", "7,3"), ("--labels", "7,0,3,3"), ("--labels", "3,7", "-k", "cutout", "-t", "0.2"),
                  ("--labels", "3,7", "--mode", "labels")):
        assert_all_skipped(runner.invoke(app, batch_args(data, out, tiny_weights, *again, "--json")), out, names,
                           stamps)
    fields = record_of(out / names[0])
    assert {key: fields[key] for key in ("version", "mode", "auto", "held", "refined")} == {
        "version": 2, "mode": "labels", "auto": "labels", "held": [3, 7], "refined": [3, 7]}
    assert "output" not in fields and "threshold" not in fields


def test_a_real_change_of_the_output_kind_redoes_binary_masks(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    names = four_pairs(data)
    assert runner.invoke(app, batch_args(data, out, tiny_weights, "-k", "soft")).exit_code == 0
    assert record_of(out / names[0])["output"] == "soft" and record_of(out / names[0])["threshold"] is None
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "-k", "binary", "--json"))
    assert (summary_of(result)["done"], summary_of(result)["skipped"]) == (4, 0)
    assert flat(result.stderr).count(f"warning: 4 outputs {OTHER}: refined again (e.g. {out / names[0]})") == 1
    fields = record_of(out / names[0])
    assert {key: fields[key] for key in ("version", "mode", "auto", "output", "threshold")} == {
        "version": 2, "mode": "binary", "auto": "binary", "output": "binary", "threshold": 0.5}
    assert "labels" not in fields
    assert {int(v) for v in np.unique(np.asarray(Image.open(out / names[0])))} <= {0, 255}
    stamps = stamps_of(out, names)
    assert_all_skipped(runner.invoke(app, batch_args(data, out, tiny_weights, "-t", "0.5", "--json")), out, names,
                       stamps)


def test_other_labels_redo_label_maps(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    names = label_map_pairs(data)
    assert runner.invoke(app, batch_args(data, out, tiny_weights, "--labels", "3")).exit_code == 0
    assert record_of(out / names[0])["refined"] == [3]
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--labels", "3,7", "--json"))
    assert (summary_of(result)["done"], summary_of(result)["skipped"]) == (2, 0)
    assert flat(result.stderr).count(f"warning: 2 outputs {OTHER}: refined again (e.g. {out / names[0]})") == 1
    assert record_of(out / names[0])["refined"] == [3, 7]
    stamps = stamps_of(out, names)
    assert_all_skipped(runner.invoke(app, batch_args(data, out, tiny_weights, "--labels", "7,3", "--json")), out,
                       names, stamps)


def test_another_mode_redoes_label_maps_both_ways(tiny_weights: Path, tmp_path: Path) -> None:
    """Refined as label maps (auto), then --mode binary: redone as one object. Refined with --mode binary,
    then auto: the record says auto chooses labels for these masks, so they are redone as label maps."""
    data, out = tmp_path / "data", tmp_path / "out"
    names = label_map_pairs(data)
    assert runner.invoke(app, batch_args(data, out, tiny_weights)).exit_code == 0
    assert record_of(out / names[0])["mode"] == "labels"
    binary = runner.invoke(app, batch_args(data, out, tiny_weights, "--mode", "binary", "--json"))
    assert (summary_of(binary)["done"], summary_of(binary)["skipped"]) == (2, 0)
    assert flat(binary.stderr).count(f"warning: 2 outputs {OTHER}: refined again (e.g. {out / names[0]})") == 1
    fields = record_of(out / names[0])
    assert (fields["mode"], fields["auto"], fields["output"]) == ("binary", "labels", "soft")
    assert not {3, 7} <= {int(v) for v in np.unique(np.asarray(Image.open(out / names[0])))}  # no ids kept
    stamps = stamps_of(out, names)
    assert_all_skipped(runner.invoke(app, batch_args(data, out, tiny_weights, "--mode", "binary", "--json")), out,
                       names, stamps)

    auto = runner.invoke(app, batch_args(data, out, tiny_weights, "--json"))
    assert (summary_of(auto)["done"], summary_of(auto)["skipped"]) == (2, 0)
    assert flat(auto.stderr).count(f"warning: 2 outputs {OTHER}: refined again") == 1
    assert (record_of(out / names[0])["mode"], record_of(out / names[0])["auto"]) == ("labels", "labels")
    assert {int(v) for v in np.unique(np.asarray(Image.open(out / names[0])))} <= {0, 3, 7}


def test_records_of_another_format_count_as_other_settings(tiny_weights: Path, tmp_path: Path) -> None:
    """The bare fingerprint the first version wrote (16 hex digits of a hash; it cannot be compared field
    by field), a record of an unknown version and one that is no JSON object: each output is redone
    once, with the warning, and then skipped."""
    import hashlib
    from dataclasses import asdict

    from crm_cli.cli.batch import SETTINGS_KEYWORD
    from crm_cli.cli.resumable import weights_identity
    from crm_cli.presets import PRESETS
    from crm_cli.writing import write_png

    data, out = tmp_path / "data", tmp_path / "out"
    names = four_pairs(data)[:3]
    for path in data.glob("p3_*"):
        path.unlink()
    assert runner.invoke(app, batch_args(data, out, tiny_weights)).exit_code == 0
    # What the first version recorded for these very settings (-k soft, mode auto, the auto preset).
    preset = {key: value for key, value in asdict(PRESETS["auto"]).items() if key != "description"}
    first = {"version": 1, "mode": "auto", "output": "soft", "threshold": None, "labels": None, "preset": preset,
             "weights": weights_identity(str(tiny_weights))}
    old = hashlib.sha256(json.dumps(first, sort_keys=True, default=str).encode()).hexdigest()[:16]
    unknown = json.dumps({**record_of(out / names[1]), "version": 3})
    for name, text in zip(names, (old, unknown, "[2]"), strict=True):
        write_png(out / name, np.asarray(Image.open(out / name)), text={SETTINGS_KEYWORD: text})
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json"))
    assert (summary_of(result)["done"], summary_of(result)["skipped"]) == (3, 0)
    assert flat(result.stderr).count(f"warning: 3 outputs {OTHER}: refined again (e.g. {out / names[0]})") == 1
    assert all(record_of(out / name)["version"] == 2 for name in names)
    stamps = stamps_of(out, names)
    assert_all_skipped(runner.invoke(app, batch_args(data, out, tiny_weights, "--json")), out, names, stamps)


def test_a_folder_named_dash_is_given_as_dot_slash_dash(tiny_weights: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a bare - is refused (standard output); ./- names a folder called "-"."""
    data = tmp_path / "data"
    names = four_pairs(data)[:1]
    for path in [*data.glob("p1_*"), *data.glob("p2_*"), *data.glob("p3_*")]:
        path.unlink()
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["batch", "data", "-o", "./-", "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert summary_of(result)["done"] == 1
    assert [item["output"] for item in summary_of(result)["items"]] == [f"-/{names[0]}"]
    assert sorted(path.name for path in (tmp_path / "-").iterdir()) == names


def test_a_file_as_the_output_folder_is_a_usage_error_naming_it(tiny_weights: Path, tmp_path: Path) -> None:
    """-o is read as typed (a str, for ./-), so batch itself refuses a file there, as click did."""
    data, blocker = tmp_path / "data", tmp_path / "notes.txt"
    four_pairs(data)
    blocker.write_text("keep")
    for extra in ((), ("--json",)):
        result = runner.invoke(app, batch_args(data, blocker, tiny_weights, *extra))
        assert result.exit_code == 2, result.output
        assert f"Invalid value for '--output': {blocker} is a file, not a folder" in flat(result.stderr)
    assert json.loads(result.stdout)["error"] == f"Invalid value for '--output': {blocker} is a file, not a folder"
    assert blocker.read_text() == "keep"
