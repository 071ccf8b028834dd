"""Write a training folder of photos plus thin-structure composites at the thin set's own scale.

Session 47's recipe (README, *Training*): the composites of ``make_thin_val.py`` (1024-2048 px on
the long side, SAM-like coarse masks with a logit cell of long side / 256 px), but with textures and
backgrounds from the DUTS-TR pairs *kept for training* (the thin set takes only held-out ones) and
another seed. ``--workers N`` draws N composites at a time (a GPU machine's 16 cores make 400 in under a
minute); each composite has its own seed, so the files are the same for any N. Output:

- OUT/data/images, OUT/data/masks: every DUTS-TR pair (symbolic links to the files) and the
  composites ``zz_thin_NNNN`` (JPEG quality 95, 8-bit soft GT). Their names sort after DUTS-TR's, so
  ``crm train``'s every-20th held-out split keeps DUTS-TR's own held-out pairs.
- OUT/coarse: each composite's SAM-like coarse mask, ``zz_thin_NNNN.png`` (0/255), for
  ``crm train --network-masks OUT/coarse`` with the mix's ``network`` mode.

The same command writes the same files.

    python benchmarks/make_thin_train.py ../shared/data/duts-tr OUT [--n 400] [--seed 47] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
from make_thin_val import make_triple, write_triple
from script_errors import one_line_errors

from crm_cli.pairing import FilePair
from crm_cli.training.data import PairCache, list_pairs, split_pairs

PREFIX = "zz_thin_"


def link_pairs(pairs: list[FilePair], data: Path) -> None:
    """Symbolic links to every pair's image and mask under data/images and data/masks."""
    for pair in pairs:
        for source, sub in ((pair.image, "images"), (pair.mask, "masks")):
            link = data / sub / source.name
            if not link.is_symlink() and not link.exists():
                os.symlink(source.resolve(), link)


class CompositeWriter:
    """Draws composite ``index`` and writes it under ``data`` and ``coarse_dir``; one per process, since
    its library of decoded photos is filled as the composites ask for them."""

    def __init__(self, training: list[FilePair], seed: int, min_side: int, max_side: int, data: Path,
                 coarse_dir: Path) -> None:
        self.library = PairCache(training)
        self.seed, self.min_side, self.max_side = seed, min_side, max_side
        self.data, self.coarse_dir = data, coarse_dir

    def __call__(self, index: int) -> str:
        """Draw and write one composite; returns its log line."""
        image, gt, coarse, kinds = make_triple(index, self.seed, self.library, self.min_side, self.max_side)
        name = f"{PREFIX}{index:04d}"
        write_triple(image, gt, coarse, self.data / "images" / f"{name}.jpg", self.data / "masks" / f"{name}.png",
                     self.coarse_dir / f"{name}.png")
        return f"{name} {image.shape[1]}x{image.shape[0]} {'+'.join(kinds)}"


_WORKER: CompositeWriter | None = None


def _start_worker(training: list[FilePair], seed: int, min_side: int, max_side: int, data: Path,
                  coarse_dir: Path) -> None:
    """A pool process's start: one OpenCV thread (the pool has a process per core) and its own writer."""
    global _WORKER
    cv2.setNumThreads(1)
    _WORKER = CompositeWriter(training, seed, min_side, max_side, data, coarse_dir)


def _draw_in_worker(index: int) -> str:
    """Draw and write composite ``index`` with this process's writer."""
    assert _WORKER is not None
    return _WORKER(index)


def draw_composites(training: list[FilePair], count: int, seed: int, min_side: int, max_side: int, data: Path,
                    coarse_dir: Path, workers: int = 1) -> None:
    """Draw and write composites 0 .. ``count - 1``, ``workers`` at a time, logging each to stderr in order."""
    arguments = (training, seed, min_side, max_side, data, coarse_dir)
    if workers <= 1:
        writer = CompositeWriter(*arguments)
        for index in range(count):
            print(writer(index), file=sys.stderr, flush=True)
        return
    # fork: the workers inherit the listed pairs instead of importing this script again.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_start_worker,
                             initargs=arguments) as pool:
        for line in pool.map(_draw_in_worker, range(count)):
            print(line, file=sys.stderr, flush=True)


@one_line_errors
def main() -> None:
    """Link the photos, draw the composites and print the ``crm train`` arguments that use them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="DUTS-TR folder (images/, masks/)")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--n", type=int, default=400, help="composites to draw")
    parser.add_argument("--seed", type=int, default=47)
    parser.add_argument("--min-side", type=int, default=1024)
    parser.add_argument("--max-side", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=1, help="composites drawn at a time (processes)")
    args = parser.parse_args()
    if args.workers < 1:
        raise SystemExit(f"error: --workers must be at least 1, not {args.workers}")
    pairs = list_pairs(args.data)
    if any(pair.name.startswith(PREFIX) for pair in pairs):
        raise SystemExit(f"{args.data} already holds {PREFIX}* pairs: give the photos' own folder")
    training, _ = split_pairs(pairs)
    data, coarse_dir = args.out / "data", args.out / "coarse"
    for folder in (data / "images", data / "masks", coarse_dir):
        folder.mkdir(parents=True, exist_ok=True)
    link_pairs(pairs, data)
    draw_composites(training, args.n, args.seed, args.min_side, args.max_side, data, coarse_dir, args.workers)
    print(json.dumps({"pairs": len(pairs), "composites": args.n, "data": str(data), "network_masks": str(coarse_dir),
                      "train_args": f"--data {data} --network-masks {coarse_dir} --synthetic 0 "
                                    "--coarse-mix paper=0.5,network=0.5 --zoom 1.5"}))


if __name__ == "__main__":
    main()
