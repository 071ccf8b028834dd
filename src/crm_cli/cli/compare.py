"""``crm compare``: a side-by-side PNG of coarse vs refined (vs GT) with zoomed boundary crops."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .checks import check_stdout_not_terminal, check_writable, role_of, standard_input_refusal
from .failures import user_errors
from .options import PhotoBits, PhotoBitsOpt, QuietOpt, photo_bits_value
from .output import fail, say, warn
from .stops import stops_cleanly

HELP = """Write a comparison strip: the image with the coarse, refined (and GT) contours side by side,
then zoomed crops of the regions where coarse and refined differ most.

Example: crm compare photo.jpg coarse.png refined.png gt.png -o cmp.png --crops 4

The strip is written as PNG, TIFF, lossless WebP or JPEG (quality 95), by the output's extension.
With -o - it is written to stdout as PNG bytes (refused when stdout is a terminal)."""


def _check_strip_name(output: Path) -> None:
    """Exit 2 unless ``output``'s extension names a format for the strip: PNG, TIFF, WebP or JPEG
    (``writing.picture_format``; JPEG, refused for a mask, is fine for a picture to look at)."""
    from ..writing import JPEG_SUFFIXES, OutputNameError, picture_format

    try:
        picture_format(output)
    except OutputNameError as exc:
        raise fail(f"{exc}, or {', '.join(JPEG_SUFFIXES[:-1])} or {JPEG_SUFFIXES[-1]} for a strip", code=2) from None


def compare(
    image: Annotated[Path, typer.Argument(metavar="IMAGE", dir_okay=False, help="The RGB image.", show_default=False)],
    coarse: Annotated[Path, typer.Argument(metavar="COARSE", dir_okay=False, help="The coarse (input) mask.",
                                           show_default=False)],
    refined: Annotated[Path, typer.Argument(metavar="REFINED", dir_okay=False, help="The refined mask (any bit depth).",
                                            show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", allow_dash=True, dir_okay=False, metavar="FILE",
                                         help="Image to write: .png, .tif, .webp or .jpg, or - for PNG on stdout.",
                                         show_default=False)],
    gt: Annotated[Path | None, typer.Argument(metavar="GT", dir_okay=False, help="Optional ground-truth mask.",
                                              show_default=False)] = None,
    crops: Annotated[int, typer.Option("--crops", min=0, max=16, metavar="N", help="Number of zoomed crops.")] = 3,
    crop_size: Annotated[int | None, typer.Option(
        "--crop-size", min=8, metavar="N", help="Crop side in image pixels (default: 1/8 of the short side, 16-256).",
        show_default=False)] = None,
    photo_bits: PhotoBitsOpt = PhotoBits.auto,
    quiet: QuietOpt = False,
) -> None:
    """Write a comparison strip (PNG, TIFF, lossless WebP or JPEG, by the output's extension; PNG with -o -)."""
    to_stdout = str(output) == "-"
    inputs = (("IMAGE", image), ("COARSE", coarse), ("REFINED", refined), ("GT", gt))
    if (refusal := standard_input_refusal(inputs, "compare")) is not None:
        raise fail(refusal, code=2)
    if to_stdout:
        check_stdout_not_terminal()
    else:
        _check_strip_name(output)
        check_writable(output)  # before any work, as crm refine: a name too long, a folder not writable
        # As crm refine refuses -o naming its image: the strip would replace an input the user still needs.
        if (found := role_of(output, inputs)) is not None:
            role, match = found
            raise fail(f"-o {output} is the {role} file {match}; writing there would replace it with the "
                       "comparison strip", code=2)
    with stops_cleanly(), user_errors():
        import numpy as np

        from ..compare import compare_strip
        from ..imageio import read_mask, read_photo
        from ..masks import binarize, has_boundary
        from ..pipeline import fit_mask_to_image
        from ..writing import encode_image, write_bytes_stdout, write_picture

        photo = read_photo(image, str(image), photo_bits=photo_bits_value(photo_bits))
        rgb, orientation = photo.pixels, photo.orientation
        for note in photo.notes:  # warnings, as in crm refine: -q keeps them
            warn(note)
        masks = []
        for path in (coarse, refined, gt):
            if path is not None:
                # A smaller same-aspect mask is upsampled; any other size mismatch is an error naming both.
                fitted, mask_notes = fit_mask_to_image(read_mask(path), rgb.shape[:2], orientation, str(image),
                                                       str(path), role="ground truth" if path is gt else "mask")
                for note in mask_notes:  # upsampled, rotated like the photo, read on another scale
                    warn(note)
                masks.append(fitted.probability())
        truth = masks[2] if gt is not None else None
        refined_side = binarize(masks[1])
        if crops and has_boundary(refined_side) and np.array_equal(binarize(masks[0]), refined_side):
            warn(f"{coarse} and {refined} agree at every pixel (> 128): the crops show the refined mask's boundary")
        strip = compare_strip(rgb, masks[0], masks[1], truth, crops=crops, crop_size=crop_size)
        # The strip shows the photo's pixels, so it keeps the photo's colour profile, as an overlay does.
        if to_stdout:
            write_bytes_stdout(encode_image(strip, fmt="PNG", icc_profile=photo.rgb_profile))
        else:
            write_picture(output, strip, icc_profile=photo.rgb_profile)
    if not quiet:
        say(f"wrote {'<stdout>' if to_stdout else output} ({strip.shape[1]}x{strip.shape[0]})")


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("compare", help=HELP, short_help="Side-by-side strip of coarse, refined (and GT) masks.")(compare)
