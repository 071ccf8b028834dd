"""``crm time``: time a refinement per stage, with peak memory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .checks import check_not_same_file, check_pair, memory_problem, passthrough_note, standard_input_refusal
from .failures import user_errors
from .options import JsonOpt, PhotoBits, PhotoBitsOpt, QuietOpt, RefinerOptions, photo_bits_value, refiner_options
from .output import FailureRecord, console, emit_json, usage_errors_recorded, warn


def parse_size(value: str) -> tuple[int, int]:
    """``"3840x2160"`` -> (height 2160, width 3840), within crm's image size limits."""
    from ..image_limits import check_image_size
    from ..image_sources import ImageReadError

    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError as exc:
        raise typer.BadParameter(f"size must look like 3840x2160, got {value!r}", param_hint="'--size'") from exc
    if width < 16 or height < 16:
        raise typer.BadParameter(f"size must be at least 16x16, got {value!r}", param_hint="'--size'")
    try:
        check_image_size(width, height, "--size")
    except ImageReadError as exc:
        raise typer.BadParameter(str(exc)) from None
    return height, width


def none_or_str(path: Path | None) -> str | None:
    """``path`` as text for a --json record; None stays None."""
    return None if path is None else str(path)


@refiner_options()
def timing(
    image: Annotated[Path | None, typer.Argument(dir_okay=False, metavar="IMAGE", help="Image file.")] = None,
    mask: Annotated[Path | None, typer.Argument(dir_okay=False, metavar="MASK", help="Coarse mask file.")] = None,
    size: Annotated[str | None, typer.Option("--size", metavar="WxH",
                                             help="Time a synthetic scene instead, e.g. 3840x2160.")] = None,
    photo_bits: PhotoBitsOpt = PhotoBits.auto,
    options: RefinerOptions = RefinerOptions(),
    repeat: Annotated[int, typer.Option("--repeat", "-n", min=1, metavar="N", help="Timed runs after one warm-up.")]
    = 3,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Warm up once, then time N refinements: per-stage encoder/decoder, total, MP/s, peak memory."""
    from ..config import MIN_REFINE_SIDE
    from ..evaluation import time_refine
    from ..masks import has_boundary, weak_mask_note
    from ..pipeline import choose_mode, ids_text, read_pair
    from ..synthetic import coarse_mask, synthetic_scene

    inputs = {"size": size} if size is not None else {"image": none_or_str(image), "mask": none_or_str(mask)}
    fatal = FailureRecord(json_out, lambda failure: {**inputs, **failure})
    # With --json, crm's own usage errors print this record too, as runtime failures do.
    with usage_errors_recorded(fatal):
        if image is not None and size is not None:
            raise typer.BadParameter("give IMAGE and MASK, or --size WxH, not both")
        if image is None and size is None or (image is not None and mask is None):
            raise typer.BadParameter("give IMAGE and MASK, or --size WxH")
        if (refusal := standard_input_refusal((("IMAGE", image), ("MASK", mask)), "time")) is not None:
            raise fatal.fail(refusal, code=2)
        if image is not None and mask is not None:
            check_not_same_file(image, mask)
        options.check_backend()
        settings = options.settings()
        if size is not None:
            height, width = parse_size(size)
            # An option asked for this size, so a size that cannot fit in memory is a usage error.
            if (problem := memory_problem(height, width, settings, options.tile_size, "the --size scene")) is not None:
                raise fatal.fail(problem, code=2)
    warnings: list[str] = []

    def noted(text: str) -> None:
        warnings.append(text)
        warn(text)

    with user_errors(fatal.emit):
        if image is not None and mask is not None:
            check_pair(image, mask, str(image), str(mask), settings, options.tile_size)
        if size is not None:
            rgb, exact = synthetic_scene(height, width)
            coarse = coarse_mask(exact)
        else:
            rgb, mask_data, notes = read_pair(image, mask, photo_bits=photo_bits_value(photo_bits))
            coarse = mask_data.probability()
            for note in notes:
                noted(note)
            if choose_mode(mask_data, "auto") == "labels" and mask_data.label_ids:  # an empty frame: no labels
                noted(f"{mask}: a label map ({ids_text(mask_data.label_ids, 'label')}), which crm refine refines "
                      "label by label; these times are of one refinement of them all as one object")
            # A mask with no boundary (empty, full, or no pixel above 0.5) is passed through by the
            # engine without running the model: the times would measure no refinement at all.
            foreground = coarse > 0.5
            if not has_boundary(foreground):
                reason = weak_mask_note(coarse, str(mask)) or (
                    f"{mask}: every pixel of the mask is {'foreground' if foreground.any() else 'background'}")
                noted(f"{reason}; with no boundary to refine the model does not run, so these times measure "
                      "no refinement")
        if min(rgb.shape[:2]) < MIN_REFINE_SIDE:
            noted(passthrough_note(rgb.shape[1], rgb.shape[0], str(image) if image is not None else "the --size scene",
                                   outcome="crm refine passes it through without running the model; these times "
                                           "are of the model run all the same"))
        refiner = options.load(quiet)
        report = time_refine(refiner, rgb, coarse, settings, repeat)
    report["warnings"] = warnings
    report["preset"] = options.preset_name
    report["status"] = "ok"  # as every command's --json record: "failed" comes from FailureRecord
    stages, median, is_cuda = report["stages"], report["total_s"], report["peak_gpu_mb"] is not None
    width, height = report["width"], report["height"]
    if not quiet or not json_out:
        from rich.table import Table

        table = Table(title=f"crm time {width}x{height} on {refiner.device_name} (median of {repeat})")
        for column in ("stage", "encoder s", "decoder s"):
            table.add_column(column, justify="right")
        for stage in stages:
            label = f"s={stage['ratio']:g}" if stage["pass"] == "stages" else f"regions s={stage['ratio']:g}"
            table.add_row(label, f"{stage['encode_s']:.3f}", f"{stage['decode_s']:.3f}")
        table.add_row("total", f"{median:.3f}", f"{report['megapixels_per_s']:.2f} MP/s")
        console.print(table)
        peak = report["peak_rss_mb"]
        memory = "peak RSS unknown (no resource module here)" if peak is None else f"peak RSS {peak:.0f} MiB"
        if is_cuda:
            memory += f", peak GPU {report['peak_gpu_mb']:.0f} MiB"
        console.print(memory, highlight=False)
        if report["by_partner"]:
            partner_path = refiner.partner_weights_info.path
            named = f" ({Path(partner_path).name})" if partner_path else ""
            console.print(f"refined by the weights' partner{named}: the photo is under its side, or the "
                          "settings are not auto's own", highlight=False)
        if report["by_lone_stage"]:
            lone_path = refiner.lone_stage_weights_info.path
            named = f" ({Path(lone_path).name})" if lone_path else ""
            console.print(f"final stage run by the weights' lone-stage weights{named}: it ran alone", highlight=False)
    if json_out:
        emit_json(report)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("time", short_help="Per-stage timing, MP/s and peak memory.")(timing)
