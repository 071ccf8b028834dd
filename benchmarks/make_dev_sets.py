"""Rebuild every dev set the project's evaluations name, from ``../shared/data`` alone.

A new machine has none of them, and each was made by a different command in a different session;
this script runs those commands in one place, so that a session's numbers can be compared with an
earlier session's. Sets (``NAME``: what it is):

- ``carvana-dev``: a link to the shared folder itself.
- ``isnet1024``, ``isnet256``: carvana-dev's photos and ground truths with ``carvana-dev-real``'s
  IS-Net masks (links, as its ``build.sh`` makes them).
- ``isnet1024_4k``, ``isnet256_4k``: every 4th car of those (sorted by name, the first included)
  enlarged 2x to 3836x2560: photo bicubic, ground truth and coarse mask bilinear and thresholded
  at 128 (session 12's sets).
- ``thin``: ``make_thin_val.py`` with its defaults (48 composites, seed 11).
- ``heldout_paper``, ``heldout_lowres``, ``heldout_blocky``: ``make_heldout_val.py --coarse KIND``.
- with ``--isnet ONNX`` (the data tool ``make_network_masks.py`` describes; never shipped):
  ``thin_isnet`` (the thin set's photos and ground truths with IS-Net masks at its 1024-px input,
  session 46's set), ``heldout_isnet`` (``make_network_masks.py --split held-out``) and ``isnet512``
  (carvana-dev's photos reduced to 512 px on the long side before IS-Net sees them, between
  carvana-dev-real's 1024 and 256: session 58's set of real masks that no threshold was chosen on).

A set whose folder exists is left as it is, so an interrupted run continues. The last line printed
is the ``NAME=FOLDER`` list that ``gate_threshold.py`` and ``pipeline_ceiling.py`` take.

    python benchmarks/make_dev_sets.py ../shared/data OUT [--isnet ISNET.onnx] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from script_errors import one_line_errors

HERE = Path(__file__).resolve().parent
ENLARGE = 2
EVERY_NTH_CAR = 4
HELDOUT_KINDS = ("paper", "lowres", "blocky")


def link(source: Path, target: Path) -> None:
    """A symbolic link ``target`` -> ``source`` (absolute), replacing one already there."""
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(source.resolve())


def car_names(carvana_dev: Path) -> list[str]:
    """The BIG-layout names of carvana-dev, sorted."""
    names = sorted(path.name[: -len("_im.jpg")] for path in carvana_dev.glob("*_im.jpg"))
    if not names:
        raise FileNotFoundError(f"{carvana_dev}: no *_im.jpg files")
    return names


def build_real(data: Path, variant: str, out: Path) -> None:
    """carvana-dev's photos and ground truths beside ``carvana-dev-real/VARIANT``'s masks, linked."""
    out.mkdir(parents=True)
    for name in car_names(data / "carvana-dev"):
        link(data / "carvana-dev" / f"{name}_im.jpg", out / f"{name}_im.jpg")
        link(data / "carvana-dev" / f"{name}_gt.png", out / f"{name}_gt.png")
        seg = data / "carvana-dev-real" / variant / f"{name}_seg.png"
        if not seg.is_file():
            raise FileNotFoundError(f"{seg}: missing")
        link(seg, out / f"{name}_seg.png")


def enlarge_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """A 0/255 mask enlarged ``factor`` times, bilinear and thresholded at 128."""
    height, width = mask.shape
    big = cv2.resize(mask, (width * factor, height * factor), interpolation=cv2.INTER_LINEAR)
    return np.where(big >= 128, 255, 0).astype(np.uint8)


def read(path: Path, flags: int) -> np.ndarray:
    """cv2.imread that names the file it could not read."""
    values = cv2.imread(str(path), flags)
    if values is None:
        raise FileNotFoundError(f"{path}: missing or not an image")
    return values


def build_enlarged(source: Path, out: Path, factor: int = ENLARGE, every: int = EVERY_NTH_CAR) -> None:
    """Every ``every``-th BIG triple of ``source`` (sorted, the first included) enlarged ``factor``x."""
    out.mkdir(parents=True)
    for name in car_names(source)[::every]:
        photo = read(source / f"{name}_im.jpg", cv2.IMREAD_COLOR)
        height, width = photo.shape[:2]
        big = cv2.resize(photo, (width * factor, height * factor), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(out / f"{name}_im.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 95])
        for kind in ("gt", "seg"):
            mask = read(source / f"{name}_{kind}.png", cv2.IMREAD_GRAYSCALE)
            cv2.imwrite(str(out / f"{name}_{kind}.png"), enlarge_mask(mask, factor))


def build_network_masks_of(source: Path, onnx: Path, out: Path, threads: int,
                           seen_long_side: int | None = None) -> None:
    """``source``'s photos and ground truths (linked) with IS-Net masks of the photos at 1024 px, each
    photo first reduced to ``seen_long_side`` on its long side when that is given."""
    from make_network_masks import NetworkMasker

    masker = NetworkMasker(onnx, threads)
    out.mkdir(parents=True)
    for photo_path in sorted(source.glob("*_im.jpg")):
        name = photo_path.name[: -len("_im.jpg")]
        link(photo_path, out / photo_path.name)
        link(source / f"{name}_gt.png", out / f"{name}_gt.png")
        rgb = read(photo_path, cv2.IMREAD_COLOR)[:, :, ::-1]
        cv2.imwrite(str(out / f"{name}_seg.png"), masker.mask(np.ascontiguousarray(rgb), seen_long_side))


def run_script(script: str, *args: str | Path) -> None:
    """Run a sibling script with this Python; its failure is this script's."""
    command = [sys.executable, str(HERE / script), *map(str, args)]
    if subprocess.run(command, stdout=subprocess.DEVNULL).returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed")


# A set built from another set's folder, and that set: built first when only the first is asked for.
NEEDS = {"isnet1024_4k": "isnet1024", "isnet256_4k": "isnet256", "thin_isnet": "thin"}


def set_builders(data: Path, out: Path, isnet: Path | None, threads: int) -> dict[str, Callable[[Path], None]]:
    """NAME -> a function that builds that set in the folder it is given, in the order to build them."""
    builders: dict[str, Callable[[Path], None]] = {
        "carvana-dev": lambda folder: link(data / "carvana-dev", folder),
        "isnet1024": lambda folder: build_real(data, "isnet1024", folder),
        "isnet256": lambda folder: build_real(data, "isnet256", folder),
        "isnet1024_4k": lambda folder: build_enlarged(out / NEEDS["isnet1024_4k"], folder),
        "isnet256_4k": lambda folder: build_enlarged(out / NEEDS["isnet256_4k"], folder),
        "thin": lambda folder: run_script("make_thin_val.py", data / "duts-tr", folder),
    }
    for kind in HELDOUT_KINDS:
        builders[f"heldout_{kind}"] = lambda folder, kind=kind: run_script(
            "make_heldout_val.py", data / "duts-tr", folder, "--coarse", kind)
    if isnet is not None:
        builders["thin_isnet"] = lambda folder: build_network_masks_of(
            out / NEEDS["thin_isnet"], isnet, folder, threads)
        builders["heldout_isnet"] = lambda folder: run_script(
            "make_network_masks.py", isnet, data / "duts-tr", folder, "--split", "held-out", "--threads", threads)
        builders["isnet512"] = lambda folder: build_network_masks_of(
            data / "carvana-dev", isnet, folder, threads, seen_long_side=512)
    return builders


@one_line_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the shared data folder (carvana-dev, carvana-dev-real, duts-tr)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--isnet", type=Path, help="the IS-Net ONNX, for thin_isnet, heldout_isnet and isnet512")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="build only these sets (and what they need)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.isnet is not None and not args.isnet.is_file():
        raise SystemExit(f"error: {args.isnet}: no such file")
    builders = set_builders(args.data, args.out, args.isnet, args.threads)
    wanted = list(builders) if args.only is None else args.only
    unknown = sorted(set(wanted) - set(builders))
    if unknown:
        raise SystemExit(f"error: unknown set(s) {', '.join(unknown)}; known: {', '.join(builders)}")
    wanted += [NEEDS[name] for name in wanted if name in NEEDS]
    args.out.mkdir(parents=True, exist_ok=True)
    built = []
    for name, build in builders.items():
        if name not in wanted:
            continue
        folder = args.out / name
        if not (folder.exists() or folder.is_symlink()):
            partial = args.out / f"{name}.partial"
            if partial.is_symlink() or partial.is_file():
                partial.unlink()
            elif partial.exists():
                raise SystemExit(f"error: {partial} is left from an interrupted run; remove it")
            build(partial)
            os.replace(partial, folder)
            print(f"built {name}", file=sys.stderr, flush=True)
        built.append(f"{name}={folder}")
    print(" ".join(built))


if __name__ == "__main__":
    main()
