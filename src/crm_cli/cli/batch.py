"""``crm batch DIR -o OUTDIR``: refine every pair in a folder, resumably."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from .common import (
    Device,
    DeviceOpt,
    JsonOpt,
    Precision,
    PrecisionOpt,
    PresetName,
    PresetOpt,
    QuietOpt,
    RatiosOpt,
    ThreadsOpt,
    WeightsOpt,
    console,
    emit_json,
    load_refiner,
    resolve_preset,
    user_errors,
)
from .refine import (
    LabelsOpt,
    Mode,
    ModeOpt,
    OutputKind,
    OutputKindOpt,
    ThresholdOpt,
    TileOpt,
    parse_labels,
)


def batch(
    folder: Annotated[Path, typer.Argument(
        exists=True, file_okay=False, help="BIG-layout folder (*_im + *_seg) or a folder with images/ and masks/.")],
    output_dir: Annotated[Path, typer.Option(
        "--output", "-o", file_okay=False, help="Output folder (mirrors sub-folders).")],
    ratios: RatiosOpt = None,
    preset: PresetOpt = PresetName.balanced,
    device: DeviceOpt = Device.auto,
    weights: WeightsOpt = None,
    threshold: ThresholdOpt = None,
    output_kind: OutputKindOpt = OutputKind.soft,
    mode: ModeOpt = Mode.auto,
    labels: LabelsOpt = None,
    tile_size: TileOpt = 1024,
    precision: PrecisionOpt = Precision.fp32,
    threads: ThreadsOpt = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo outputs that already exist.")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Refine every image/mask pair under FOLDER. Finished outputs are skipped unless --overwrite;
    a bad pair is reported and the rest go on; the exit code is 1 if any pair failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..imageio import write_png
    from ..pairing import find_pairs
    from ..pipeline import refine_files

    label_ids = parse_labels(labels)
    settings = resolve_preset(ratios, preset)
    if output_dir.resolve() == folder.resolve() or output_dir.resolve() in (
        (folder / "images").resolve(), (folder / "masks").resolve()
    ):
        raise typer.BadParameter("the output folder must differ from the input folders")
    with user_errors():
        pairs, problems = find_pairs(folder)
    items: list[dict] = [{"name": None, "image": None, "mask": None, "output": None, "status": "failed",
                          "error": problem, "seconds": 0.0} for problem in problems]
    todo = [p for p in pairs if overwrite or not (output_dir / p.relative_output).exists()]
    for pair in pairs:
        if pair not in todo:
            items.append({"name": pair.name, "image": str(pair.image), "mask": str(pair.mask),
                          "output": str(output_dir / pair.relative_output), "status": "skipped"})
    refiner = None
    if todo:
        with user_errors():
            refiner = load_refiner(weights, device, quiet=quiet, tile_size=tile_size,
                                   precision=precision.value, threads=threads or None)
    with Progress(TextColumn("refine"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[current]}"), console=console, disable=quiet) as progress:
        task = progress.add_task("batch", total=len(todo), current="")
        for pair in todo:
            progress.update(task, current=pair.name)
            out_path = output_dir / pair.relative_output
            item = {"name": pair.name, "image": str(pair.image), "mask": str(pair.mask), "output": str(out_path)}
            start = time.perf_counter()
            try:
                result = refine_files(refiner, pair.image, pair.mask, settings, mode=mode.value, labels=label_ids,
                                      output_kind=output_kind.value, threshold=threshold)
                write_png(out_path, result.output, result.palette)
                item.update(status="ok", mode=result.mode)
                for note in result.notes:
                    progress.console.print(f"[yellow]warning:[/] {note}", highlight=False)
            except (OSError, ValueError, RuntimeError) as exc:
                item.update(status="failed", error=str(exc))
                progress.console.print(f"[red]failed:[/] {pair.name}: {exc}", highlight=False)
            item["seconds"] = round(time.perf_counter() - start, 4)
            items.append(item)
            progress.advance(task)
    counts = {k: sum(1 for i in items if i["status"] == k) for k in ("ok", "skipped", "failed")}
    if not quiet:
        console.print(f"batch: {counts['ok']} refined, {counts['skipped']} skipped (already done), "
                      f"{counts['failed']} failed -> {output_dir}", highlight=False)
        for item in items:
            if item["status"] == "failed":
                label = f"{item['name']}: " if item["name"] else ""
                console.print(f"  [red]failed[/] {label}{item['error']}", highlight=False)
    if json_out:
        emit_json({"done": counts["ok"], "skipped": counts["skipped"], "failed": counts["failed"],
                   "output_dir": str(output_dir), "items": items})
    if counts["failed"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("batch")(batch)
