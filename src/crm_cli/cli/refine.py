"""``crm refine IMAGE MASK -o OUT``: refine one mask."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .checks import (
    check_label_output,
    check_labels,
    check_not_same_file,
    check_output_name,
    check_output_size,
    check_pair,
    check_stdout_not_terminal,
    passthrough_note,
    passthrough_pair,
    same_file,
    schedule_fields,
    special_file,
)
from .failures import user_errors
from .options import (
    JsonOpt,
    LabelsOpt,
    Mode,
    ModeOpt,
    OutputKind,
    OutputKindOpt,
    PhotoBits,
    PhotoBitsOpt,
    QuietOpt,
    RefinerOptions,
    ThresholdOpt,
    parse_labels,
    photo_bits_value,
    refiner_options,
)
from .output import FailureRecord, collect_warnings, emit_json, fail, say, usage_errors_recorded, warn
from .stops import clear_leftover_temp_files

# What the log line calls each output kind.
KIND_NAMES = {"soft": "soft mask", "soft16": "16-bit soft mask", "binary": "binary mask", "cutout": "cut-out",
              "overlay": "overlay"}


@refiner_options()
def refine(
    image: Annotated[Path, typer.Argument(allow_dash=True, dir_okay=False, metavar="IMAGE",
                                          help="Image file, or - for stdin.")],
    mask: Annotated[Path, typer.Argument(allow_dash=True, dir_okay=False, metavar="MASK",
                                         help="Coarse mask, or - for stdin.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", allow_dash=True, dir_okay=False, metavar="FILE",
                                                help=".png, .tif or .webp (lossless), or - for stdout "
                                                     "[default: MASK_refined.png].")]
    = None,
    options: RefinerOptions = RefinerOptions(),
    threshold: ThresholdOpt = None,
    output_kind: OutputKindOpt = OutputKind.soft,
    mode: ModeOpt = Mode.auto,
    labels: LabelsOpt = None,
    photo_bits: PhotoBitsOpt = PhotoBits.auto,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Refine MASK to follow IMAGE's boundaries at full resolution.

    The default output is the soft probability x 255 (8-bit); --threshold gives a binary mask.
    Images with a side under 96 px are passed through unchanged, with a warning.
    """
    import functools
    import sys

    from ..config import DEEP_CUTOUT_BITS
    from ..image_sources import read_bytes_stdin
    from ..imageio import log_notes
    from ..pipeline import mask_keeping_notes, refine_files, runs_summary
    from ..writing import encode_image, keeps_transparency, output_format, write_bytes_stdout, write_image

    to_stdout = str(output) == "-"
    # With --json, crm's own usage errors print this record too, as runtime failures do.
    fatal = FailureRecord(json_out, lambda failure: {
        "image": str(image), "mask": str(mask), "output": None if output is None else str(output), **failure,
        "warnings": list(shown)})
    with usage_errors_recorded(fatal), collect_warnings() as shown:  # shown: the warnings printed for the image
        if to_stdout and json_out:  # the record alone goes to stdout: no image is written there
            raise typer.BadParameter("-o - and --json both want stdout; choose one")
        if str(image) == "-" and str(mask) == "-":
            raise typer.BadParameter("only one of IMAGE and MASK can be read from stdin")
        if output is None:
            if str(mask) == "-":
                raise typer.BadParameter("give -o OUT (or -o -) when the mask comes from stdin")
            # MASK_refined.png has no folder to go in beside a pipe (`<(cat m.png)` is /dev/fd/63) or a device.
            if (kind := special_file(mask)) is not None:
                raise typer.BadParameter(f"give -o OUT (or -o -) when the mask comes from a pipe or device: "
                                         f"{mask} is {kind}")
            output = mask.with_name(f"{mask.stem}_refined.png")
        check_not_same_file(image, mask)
        if to_stdout:
            check_stdout_not_terminal()
        # A closed stdin (`<&-`) is read_bytes_stdin's to report (exit 1, as a missing file).
        if "-" in (str(image), str(mask)) and sys.stdin is not None and sys.stdin.isatty():
            raise fail("'-' reads a file from stdin, but stdin is a terminal; pipe a file in", code=2)
        label_ids = parse_labels(labels, mode.value)
        settings = options.settings()
        if not to_stdout:
            check_output_name(output, output_kind.value)
            if str(image) != "-" and same_file(image, output):
                raise fail(f"-o {output} is the image {image}; writing there would replace the photo with the mask",
                           code=2)
        image_name = "<stdin>" if str(image) == "-" else str(image)
        mask_name = "<stdin>" if str(mask) == "-" else str(mask)
        # A 16-bit photo's cut-out keeps 16 bits where the file can hold them with its profile: PNG.
        cutout_bits = DEEP_CUTOUT_BITS if to_stdout or output_format(output) == "PNG" else 8

        device_name = None
        with user_errors(fatal.emit):
            image_src = read_bytes_stdin() if str(image) == "-" else image
            mask_src = read_bytes_stdin() if str(mask) == "-" else mask
            # Everything that can be checked without the model is checked first (milliseconds).
            header, passthrough = check_pair(image_src, mask_src, image_name, mask_name, settings, options.tile_size,
                                             None if to_stdout else output, mode=mode.value)
            # Both pre-model checks that need the mask's pixels share one decode, whose reading notes
            # ride on it to be listed after the photo's (pipeline.read_photo_pair).
            pre_model_mask = functools.cache(lambda: mask_keeping_notes(mask_src, mask_name))
            try:
                if not to_stdout:
                    check_output_size(output, header.width, header.height)
                    check_label_output(pre_model_mask, mask_name, mode.value, output)
                # A label map holding none of the ids needs no model; refine_files notes the ids otherwise.
                label_notes, nothing_to_refine = ([], False) if label_ids is None or passthrough else check_labels(
                    pre_model_mask, mask_name, mode.value, label_ids)
            except typer.Exit:  # a refusal: its error line is out already, and stays the last word
                raise
            except Exception:
                if pre_model_mask.cache_info().currsize:
                    log_notes(pre_model_mask().reading_notes)
                raise
            # The checks' decode, when they made one, is the mask refined: a large mask is read once.
            decoded_mask = pre_model_mask() if pre_model_mask.cache_info().currsize else None
            if passthrough or nothing_to_refine:  # no model needed: the mask is written as it is
                result = passthrough_pair(image_src, mask_src, mode=mode.value, output_kind=output_kind.value,
                                          threshold=threshold, image_name=image_name, mask_name=mask_name,
                                          decoded_mask=decoded_mask, photo_bits=photo_bits_value(photo_bits),
                                          cutout_bits=cutout_bits)
                result.notes.extend(label_notes)
                if passthrough:
                    result.notes.append(passthrough_note(header.width, header.height, image_name))
            else:
                refiner = options.load(quiet)  # its warnings (unverified weights) are about no image: not in shown
                device_name = refiner.device_name
                result = refine_files(
                    refiner, image_src, mask_src, settings, mode=mode.value, labels=label_ids,
                    output_kind=output_kind.value, threshold=threshold, image_name=image_name, mask_name=mask_name,
                    decoded_mask=decoded_mask, photo_bits=photo_bits_value(photo_bits), cutout_bits=cutout_bits,
                )
            if not to_stdout and result.transparency is not None and not keeps_transparency(output_format(output)):
                result.notes.append(f"{output}: {output_format(output)} cannot hold the palette's transparency "
                                    f"of {mask_name}, so it is written without it; name the output .png to keep it")
            for note in result.notes:
                warn(note)
            if to_stdout:
                write_bytes_stdout(encode_image(result.output, result.palette, "PNG", result.icc_profile,
                                                transparency=result.transparency))
            else:
                clear_leftover_temp_files([output], quiet)
                write_image(output, result.output, result.palette, result.icc_profile, result.transparency)
    if not quiet:
        from ..outputs import effective_rendering

        kind = effective_rendering(output_kind.value, threshold)[0]
        what = "label map" if result.mode == "labels" else KIND_NAMES[kind]
        if passthrough:
            done = "passed through unchanged"
        elif not result.runs:  # a label map holding none of the ids to refine
            done = "unchanged: no label to refine"
        else:
            done = f"{result.seconds:.2f} s, {runs_summary(result.runs)}"
        say(f"wrote {'<stdout>' if to_stdout else output} ({what}, {done})")
    if json_out:
        emit_json({
            "image": str(image), "mask": str(mask), "output": str(output), "status": "ok", "mode": result.mode,
            "seconds": round(result.seconds, 4), "device": device_name, "passthrough": passthrough,
            "width": int(result.output.shape[1]), "height": int(result.output.shape[0]),
            "preset": options.preset_name, **schedule_fields(result, passthrough), "warnings": shown,
        })


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("refine", short_help="Refine one mask to follow its image's boundaries.")(refine)
