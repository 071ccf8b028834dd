"""`crm batch` resuming label maps by the ids refined (audit s35): a label map's record names the ids its
mask held and those refined, so that a rerun whose --labels would refine the same ids skips (none, then
every id the masks hold, and back), without reading a mask; other ids are refined again; version-2
records written before (naming --labels) are judged as they were."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from batch_records import record_of, stamps_of
from conftest import flat, write_scene_files
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()
OTHER = ("made with other settings (mode, labels, output kind, threshold, photo bits, preset, "
          "ratios, guard, edge snap or weights; outputs made before the edge snap have none)")
VOC_IDS = [12, 15, 255]  # two classes and the void band around them


def batch_args(data: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return ["batch", str(data), "-o", str(out), "-w", str(weights), "-d", "cpu", *extra]


def voc_pairs(data: Path, count: int = 2) -> list[str]:
    """``count`` photos with VOC-style palette label maps holding ids 12 and 15, each ringed by void (255)."""
    palette = np.random.default_rng(1).integers(0, 256, 768).tolist()
    palette[:3] = [0, 0, 0]
    for k in range(count):
        _, mask = write_scene_files(data, f"m{k}_im", f"m{k}_seg", seed=k)
        ids = np.zeros((96, 128), np.uint8)
        ids[8:52, 8 + 4 * k:62] = 255
        ids[10:50, 10 + 4 * k:60] = 12
        ids[38:92, 58:122 - 4 * k] = 255
        ids[40:90, 60:120 - 4 * k] = 15
        image = Image.fromarray(ids, "P")
        image.putpalette(palette)
        image.save(mask)
    return [f"m{k}_mask.png" for k in range(count)]


def summary_of(result) -> dict:  # noqa: ANN001
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_all_skipped(result, out: Path, names: list[str], stamps: list[int]) -> None:  # noqa: ANN001
    summary = summary_of(result)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (0, len(names), 0), result.stderr
    assert "other settings" not in result.stderr and "warning" not in result.stderr
    assert stamps_of(out, names) == stamps


def assert_all_redone(result, out: Path, names: list[str]) -> None:  # noqa: ANN001
    summary = summary_of(result)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (len(names), 0, 0)
    assert flat(result.stderr).count(f"warning: {len(names)} outputs were {OTHER}: refined again "
                                     f"(e.g. {out / names[0]})") == 1


# --- the audit's scenario, both ways -------------------------------------------------------------


@pytest.mark.parametrize("listed", ["12,15,255", "255,15,12", "0,12,15,40,255"])
def test_listing_every_id_the_masks_hold_after_no_labels_skips(tiny_weights: Path, tmp_path: Path,
                                                               listed: str) -> None:
    """No --labels, then --labels naming every id the masks hold (in any order, with the background or
    ids no mask holds): the same ids are refined, so nothing is."""
    data, out = tmp_path / "data", tmp_path / "out"
    names = voc_pairs(data)
    assert runner.invoke(app, batch_args(data, out, tiny_weights)).exit_code == 0
    stamps = stamps_of(out, names)
    assert_all_skipped(runner.invoke(app, batch_args(data, out, tiny_weights, "--labels", listed, "--json")), out,
                       names, stamps)
    fields = record_of(out / names[0])
    assert (fields["version"], fields["mode"], fields["held"], fields["refined"]) == (2, "labels", VOC_IDS, VOC_IDS)
    assert "labels" not in fields


def test_no_labels_after_listing_every_id_the_masks_hold_skips(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    names = voc_pairs(data)
    assert runner.invoke(app, batch_args(data, out, tiny_weights, "--labels", "12,15,255")).exit_code == 0
    stamps = stamps_of(out, names)
    assert_all_skipped(runner.invoke(app, batch_args(data, out, tiny_weights, "--json")), out, names, stamps)
    assert_all_skipped(runner.invoke(app, batch_args(data, out, tiny_weights, "--mode", "labels", "--json")), out,
                       names, stamps)


def test_resume_reads_no_mask(tiny_weights: Path, tmp_path: Path) -> None:
    """The ids compared on resume are the record's: masks made unreadable (their times kept, so they
    are not newer than the outputs) do not stop a rerun with every id listed from skipping."""
    data, out = tmp_path / "data", tmp_path / "out"
    names = voc_pairs(data)
    assert runner.invoke(app, batch_args(data, out, tiny_weights)).exit_code == 0
    for mask in data.glob("*_seg.png"):
        times = mask.stat()
        mask.write_bytes(b"not a PNG")
        os.utime(mask, ns=(times.st_atime_ns, times.st_mtime_ns))
    stamps = stamps_of(out, names)
    assert_all_skipped(runner.invoke(app, batch_args(data, out, tiny_weights, "--labels", "12,15,255", "--json")),
                       out, names, stamps)


# --- other ids are refined again ------------------------------------------------------------------


def test_a_labels_subset_of_the_ids_held_is_refined_again(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    names = voc_pairs(data)
    assert runner.invoke(app, batch_args(data, out, tiny_weights)).exit_code == 0
    assert_all_redone(runner.invoke(app, batch_args(data, out, tiny_weights, "--labels", "12,15", "--json")), out,
                      names)
    fields = record_of(out / names[0])
    assert (fields["held"], fields["refined"]) == (VOC_IDS, [12, 15])
    stamps = stamps_of(out, names)
    assert_all_skipped(runner.invoke(app, batch_args(data, out, tiny_weights, "--labels", "15,12,40", "--json")),
                       out, names, stamps)


def test_a_mask_holding_ids_not_listed_is_refined_again_without_labels(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    names = voc_pairs(data)
    assert runner.invoke(app, batch_args(data, out, tiny_weights, "--labels", "12,15")).exit_code == 0
    assert_all_redone(runner.invoke(app, batch_args(data, out, tiny_weights, "--json")), out, names)
    assert record_of(out / names[0])["refined"] == VOC_IDS


def test_a_label_map_holding_none_of_the_labels_records_none_refined(tiny_weights: Path, tmp_path: Path) -> None:
    """Written unchanged (none of --labels held): other ids absent skip, no --labels refines them."""
    data, out = tmp_path / "data", tmp_path / "out"
    names = voc_pairs(data)
    assert runner.invoke(app, batch_args(data, out, tiny_weights, "--labels", "40")).exit_code == 0
    assert (record_of(out / names[0])["held"], record_of(out / names[0])["refined"]) == (VOC_IDS, [])
    stamps = stamps_of(out, names)
    assert_all_skipped(runner.invoke(app, batch_args(data, out, tiny_weights, "--labels", "41,0", "--json")),
                       out, names, stamps)
    assert_all_redone(runner.invoke(app, batch_args(data, out, tiny_weights, "--json")), out, names)


# --- records written before the ids -------------------------------------------------------------------


def test_version_2_records_naming_labels_are_judged_as_before(tiny_weights: Path, tmp_path: Path) -> None:
    """An output whose record names --labels (null: all), as version-2 records did before the ids: no
    --labels skips it, a --labels list is another setting (the mask's ids are not read to tell)."""
    from crm_cli.cli.batch import SETTINGS_KEYWORD
    from crm_cli.writing import write_png

    data, out = tmp_path / "data", tmp_path / "out"
    names = voc_pairs(data)
    assert runner.invoke(app, batch_args(data, out, tiny_weights)).exit_code == 0
    for name in names:
        fields = record_of(out / name)
        del fields["held"], fields["refined"]
        fields["labels"] = None
        pixels = Image.open(out / name)
        write_png(out / name, np.asarray(pixels), pixels.getpalette(),
                  text={SETTINGS_KEYWORD: json.dumps(fields, sort_keys=True, separators=(",", ":"))})
    stamps = stamps_of(out, names)
    assert_all_skipped(runner.invoke(app, batch_args(data, out, tiny_weights, "--json")), out, names, stamps)
    assert_all_redone(runner.invoke(app, batch_args(data, out, tiny_weights, "--labels", "12,15,255", "--json")),
                      out, names)
    assert record_of(out / names[0])["held"] == VOC_IDS  # rewritten in the new form


# --- the record itself ------------------------------------------------------------------------------


def a_record(labels: list[int] | None):  # noqa: ANN201 - batch's OutputRecord
    from crm_cli.cli.batch import OutputRecord
    from crm_cli.presets import PRESETS

    return OutputRecord.of(mode="auto", labels=labels, output_kind="soft", threshold=None,
                           settings=PRESETS["auto"], weights="w")


def test_ids_are_recorded_short_and_read_back() -> None:
    from crm_cli.cli.batch import compact_ids, expand_ids

    assert compact_ids([12, 15, 255]) == [12, 15, 255]
    assert compact_ids([1, 2, 5, 6, 7, 9]) == [1, 2, [5, 7], 9]
    instances = list(range(1, 401))
    assert compact_ids(instances) == [[1, 400]]
    assert compact_ids([]) == []
    for ids in ([12, 15, 255], [1, 2, 5, 6, 7, 9], instances, [], [65535]):
        assert expand_ids(compact_ids(ids)) == tuple(ids)
    for damaged in (None, "1,2", [3, 2], [[1, 5], 4], [[5, 5]], [[5, 1]], [True], [1.0], [-1], [70000],
                    [[1, 70000]], [[1, 2, 3]]):
        assert expand_ids(damaged) is None, damaged


def test_a_label_map_record_is_accepted_when_the_same_ids_would_be_refined() -> None:
    held = [12, 15, 255]
    everything = a_record(None).stamp("labels", "labels", False, held)
    assert json.loads(everything)["refined"] == held
    for labels in (None, [12, 15, 255], [0, 255, 15, 12, 99]):
        assert a_record(labels).accepts(everything), labels
    for labels in ([12, 15], [12], [40]):
        assert not a_record(labels).accepts(everything), labels

    some = a_record([12, 15]).stamp("labels", "labels", False, held)
    assert json.loads(some)["refined"] == [12, 15]
    assert a_record([15, 12, 40]).accepts(some)
    assert not a_record(None).accepts(some)
    assert not a_record([12, 15, 255]).accepts(some)

    # Damaged ids, refined ids that no --labels makes of the held ones: not accepted.
    fields = json.loads(some)
    for held_ids, refined in (([12, 15, 255], [12, 40]), ([12, 15, 255], None), ("12", [12, 15]),
                              ([255, 12], [12])):
        text = json.dumps({**fields, "held": held_ids, "refined": refined})
        assert not a_record([12, 15]).accepts(text), (held_ids, refined)


def test_a_version_2_record_naming_labels_is_compared_by_labels() -> None:
    old_form = a_record(None).stamp("labels", "labels", False)
    assert json.loads(old_form)["labels"] is None and "held" not in json.loads(old_form)
    assert a_record(None).accepts(old_form)
    assert not a_record([12, 15, 255]).accepts(old_form)


def test_a_pair_job_records_the_ids_held_and_refined(tiny_weights: Path, tmp_path: Path) -> None:
    """refine_pair_job, which Ray actors run as the plain loop does, names the mask's ids in the record,
    with each --mode."""
    from crm_cli.cli.batch import SETTINGS_KEYWORD, OutputRecord, refine_pair_job
    from crm_cli.engine import Refiner
    from crm_cli.presets import PRESETS
    from crm_cli.writing import read_png_text

    voc_pairs(tmp_path, count=1)
    image, mask, output = tmp_path / "m0_im.jpg", tmp_path / "m0_seg.png", tmp_path / "out" / "m0_mask.png"
    job = {"image": str(image), "mask": str(mask), "output": str(output), "name": "m0", "image_name": str(image),
           "mask_name": str(mask), "passthrough": False}
    refiner = Refiner(tiny_weights, device="cpu")
    for mode, labels in (("auto", None), ("labels", [15]), ("auto", [12, 15, 255])):
        record = OutputRecord.of(mode=mode, labels=labels, output_kind="soft", threshold=None,
                                 settings=PRESETS["auto"], weights="w")
        outcome = refine_pair_job(refiner, job, settings=PRESETS["auto"], mode=mode, labels=labels,
                                  output_kind="soft", threshold=None, overwrite=True, record=record)
        assert outcome["status"] == "ok", outcome
        fields = json.loads(read_png_text(output, SETTINGS_KEYWORD))
        assert (fields["mode"], fields["auto"], fields["held"]) == ("labels", "labels", VOC_IDS)
        assert fields["refined"] == (VOC_IDS if labels is None else labels)


def test_ray_and_plain_runs_record_alike(tiny_weights: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    data = tmp_path / "data"
    names = voc_pairs(data)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = runner.invoke(app, batch_args(data, tmp_path / "ray", tiny_weights, "--ray", "local"))
    finally:
        ray.shutdown()
    assert on_ray.exit_code == 0, on_ray.output
    assert runner.invoke(app, batch_args(data, tmp_path / "plain", tiny_weights)).exit_code == 0
    for name in names:
        assert record_of(tmp_path / "ray" / name) == record_of(tmp_path / "plain" / name)
    stamps = stamps_of(tmp_path / "ray", names)
    assert_all_skipped(runner.invoke(app, batch_args(data, tmp_path / "ray", tiny_weights, "--labels", "12,15,255",
                                                     "--json")), tmp_path / "ray", names, stamps)
