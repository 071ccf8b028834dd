"""One complete line of each crm command on tiny inputs, for the tests of options that several commands
share (a helper module, not a test file)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import write_scene_files


def command_inputs(folder: Path) -> dict[str, Path]:
    """A pair, a BIG-layout folder and a one-instance COCO file, all tiny, made under ``folder``; by role,
    with ``out``, where the outputs go (not made)."""
    image, mask = write_scene_files(folder / "pair")
    write_scene_files(folder / "big", "a_im", "a_seg")
    write_scene_files(folder / "big", "a_im", "a_gt")
    annotations = folder / "coco.json"
    annotations.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "im.jpg", "height": 96, "width": 128}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                         "segmentation": [[10.0, 10.0, 60.0, 10.0, 60.0, 60.0]]}]}))
    return {"image": image, "mask": mask, "big": folder / "big", "coco": annotations,
            "images": folder / "pair", "out": folder / "out"}


def command_line(command: str, paths: dict[str, Path], *model: str) -> list[str]:
    """A complete ``crm COMMAND`` line on ``paths`` (command_inputs) that would run, so only the option
    under test can fail; ``model`` (the weights' and device's options) ends the line of each command but
    score, which loads no model."""
    lines = {
        "refine": ["refine", str(paths["image"]), str(paths["mask"]), "-o", str(paths["out"] / "o.png")],
        "batch": ["batch", str(paths["big"]), "-o", str(paths["out"])],
        "eval": ["eval", str(paths["big"])],
        "time": ["time", str(paths["image"]), str(paths["mask"]), "-n", "1"],
        "coco": ["coco", str(paths["coco"]), "--images", str(paths["images"]), "-o", str(paths["out"] / "o.json")],
        "score": ["score", str(paths["mask"]), str(paths["mask"])],
    }
    return lines[command] if command == "score" else [*lines[command], *model]
