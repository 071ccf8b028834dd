"""A photo's bit depth: the uint8 scale of 16-bit, 32-bit and float values (photo_bits) and its notes."""

from __future__ import annotations

import operator
from collections.abc import Callable

import numpy as np
from PIL import Image

from .sample_values import STORED_BITS, photo_integers, uint16_to_uint8, unit_floats
from .writing import warnings_ignored

# Bits a 16-bit photo may really hold: 8-bit values saved in a 16-bit file (the slip that
# masks.uint16_full_scale handles for masks) or a 10-, 12- or 14-bit sensor's; on the 16-bit scale
# they would be almost black, and the model would see no edges. The scale follows the largest value,
# so a dark 16-bit photo whose values all stay under 16384 reads brighter than it was drawn.
_PHOTO_BIT_DEPTHS = STORED_BITS[:-1]
# The scales a caller can fix for every 16-bit photo it reads (``photo_bits``; the CLI's --photo-bits):
# the frames of one sequence then share a scale, whatever each frame's largest value (a highlight
# over 4095 in one frame of a 12-bit shot would read it as 14-bit, 4x darker than the others).
PHOTO_BITS_CHOICES: tuple[int, ...] = STORED_BITS
# How the notes name what fixes the scale: the API's keyword; the CLI shows them with its option's name
# (:func:`cli_note`).
_API_OPTION = "photo_bits={bits}"
_CLI_OPTION = "--photo-bits {bits}"
# Appended to each note of a scale chosen by a file's own values: what fixes it for a sequence.
_FIXED_SCALE_HINT = "the scale follows each file's values, so frames of one sequence can differ: {option} fixes it"
# The end of the note of a photo clipped to a fixed scale (:func:`_fixed_scale_to_uint8`).
_CLIPPED = " ({option}); clipped to white"


def _option_endings(option: str) -> tuple[str, ...]:
    """The endings of the notes that name the option fixing the scale, as ``option`` spells it: the
    fixed-scale hint, then the clip note's for each scale of PHOTO_BITS_CHOICES."""
    return (_FIXED_SCALE_HINT.format(option=option.format(bits="N")),
            *(_CLIPPED.format(option=option.format(bits=bits)) for bits in PHOTO_BITS_CHOICES))


# Each ending as the API writes it, with the CLI's in its place.
_CLI_ENDINGS = tuple(zip(_option_endings(_API_OPTION), _option_endings(_CLI_OPTION), strict=True))
# The hint as the readers write it: "... photo_bits=N fixes it".
_API_SCALE_HINT = _FIXED_SCALE_HINT.format(option=_API_OPTION.format(bits="N"))
# The hint's first part alone, for a command that has no option to fix the scale.
_SCALE_WITHOUT_FIX = _FIXED_SCALE_HINT.split(":", 1)[0]


# How a 16-bit photo's cut-out keeps its 16 bits, ending the note on an 8-bit one (pipeline.cutout_depth_note),
# as the API and as the CLI say it.
CUTOUT_16BIT_API_HINT = "; refine_files(..., cutout_bits=16) keeps 16 bits, written as PNG"
_CUTOUT_16BIT_CLI_HINT = "; name the output .png to keep 16 bits"


def cli_note(note: str, has_photo_bits: bool = True) -> str:
    """``note`` (of a reader, or a pair's notes) as the CLI shows it: a note ending with the API's name
    of the option that fixes a 16-bit photo's scale (``photo_bits=12``) ends with the CLI's instead
    (``--photo-bits 12``); any other note is returned as it is. Only the ending that the readers write
    is replaced, so a file named ``photo_bits=12.png`` keeps its name. For a command without
    ``--photo-bits`` (``has_photo_bits`` False: crm train) the hint that names it is left off. The note on
    a 16-bit photo's 8-bit cut-out names ``cutout_bits=16`` in the API and a .png output in the CLI."""
    if not has_photo_bits and note.endswith(_API_SCALE_HINT):
        return note[: len(note) - len(_API_SCALE_HINT)] + _SCALE_WITHOUT_FIX
    for api, cli in (*_CLI_ENDINGS, (CUTOUT_16BIT_API_HINT, _CUTOUT_16BIT_CLI_HINT)):
        if note.endswith(api):
            return note[: len(note) - len(api)] + cli
    return note


def check_photo_bits(photo_bits: int | None) -> int | None:
    """``photo_bits`` as an int of PHOTO_BITS_CHOICES, or None (each 16-bit photo read on the scale of
    its own largest value); ValueError for anything else."""
    if photo_bits is None:
        return None
    if not isinstance(photo_bits, bool):
        try:
            bits = operator.index(photo_bits)
        except TypeError:
            bits = None
        if bits in PHOTO_BITS_CHOICES:
            return bits
    raise ValueError(f"photo_bits must be None (each file's own scale) or one of "
                     f"{', '.join(map(str, PHOTO_BITS_CHOICES))}, got {photo_bits!r}")


def _photo_to_uint8(values: np.ndarray, label: str, photo_bits: int | None = None) -> tuple[np.ndarray, str | None]:
    """uint16 photo values as uint8, white at the top of the fewest bits of _PHOTO_BIT_DEPTHS that
    hold the largest value (65535 when none do), and the note for a photo read on a smaller scale.
    A photo that reading would flatten is stretched instead (:func:`_flattened`). With ``photo_bits``
    the scale is that one, for every photo (:func:`_fixed_scale_to_uint8`)."""
    if photo_bits is not None:
        return _fixed_scale_to_uint8(values, label, photo_bits)
    top = int(values.max()) if values.size else 0
    white = next(((1 << bits) - 1 for bits in _PHOTO_BIT_DEPTHS if top < 1 << bits), 65535)
    if white == 65535 or top == 0:  # an all-black photo is black on any scale: no note
        scaled, note = uint16_to_uint8(values), None
    else:
        scaled = ((values.astype(np.uint32) * 255 + white // 2) // white).astype(np.uint8)
        note = (f"{label}: a 16-bit image whose largest value is {top}, read as {white.bit_length()}-bit "
                f"values ({white} = white); {_API_SCALE_HINT}")
    if not _flattened(lambda: values, scaled):
        if white == 65535 and top != 0:
            note = _few_above_note(values, label)
        return scaled, note
    low = int(values.min())
    span = top - low
    stretched = (((values.astype(np.uint32) - low) * 255 + span // 2) // span).astype(np.uint8)
    return stretched, f"{_stretch_note(label, f'{low} to {top}', white, scaled)}; {_API_SCALE_HINT}"


# A photo read on the 16-bit scale all but this share of whose pixels fit 12 bits (or 10) is most likely a
# frame of that scale with a few hot or saturated pixels (one hot pixel in a 12-bit X-ray frame put it
# on the 16-bit scale, 16 times darker, and the model kept its coarse mask).
FEW_ABOVE_SHARE = 1e-3


def _few_above_note(values: np.ndarray, label: str) -> str | None:
    """The note for a photo read on the 16-bit scale whose pixels, all but FEW_ABOVE_SHARE of them,
    fit the 12-bit scale (10-bit when they fit that): on the 16-bit scale they read almost black
    (at most 16 of 255). None otherwise. The reading is not changed: a dark 16-bit photo with a few
    bright lamps is read as it is."""
    brightest = values.max(axis=-1) if values.ndim == 3 else values  # one pass over a colour photo
    count = brightest.size
    note = None
    for bits in (12, 10):
        white = (1 << bits) - 1
        over = int(np.count_nonzero(brightest > white))
        if over > FEW_ABOVE_SHARE * count:
            break
        darkest = (white * 255 + 32767) // 65535
        note = (f"{label}: a 16-bit image read on the 16-bit scale for {over} pixel{'s' if over != 1 else ''} "
                f"above {white} ({100 * over / count:.2g}% of them); the rest hold {bits}-bit values and read "
                f"almost black (at most {darkest} of 255): a {bits}-bit frame with hot or saturated pixels? "
                f"{_API_SCALE_HINT}")
    return note


def _fixed_scale_to_uint8(values: np.ndarray, label: str, bits: int) -> tuple[np.ndarray, str | None]:
    """uint16 photo values (H, W) or (H, W, 3) as uint8 on the ``bits``-bit scale (white = 2**bits - 1,
    value / white * 255, rounded), never stretched: a scale fixed for a sequence must not move with
    a frame's values. Values above white are clipped to it, with a note counting the pixels clipped."""
    white = (1 << bits) - 1
    wide = values.astype(np.uint32)
    note = None
    if values.size and int(values.max()) > white:
        over = values > white
        clipped = int(np.count_nonzero(over.any(axis=-1) if over.ndim == 3 else over))
        asked = _CLIPPED.format(option=_API_OPTION.format(bits=bits))  # " (photo_bits=12); clipped to white"
        note = (f"{label}: {clipped} pixel{'s hold values' if clipped != 1 else ' holds a value'} above {white}, "
                f"the white of the {bits}-bit scale asked for{asked}")
        np.minimum(wide, white, out=wide)
    wide *= 255
    wide += white // 2
    wide //= white
    return wide.astype(np.uint8), note


# A photo whose 8-bit reading leaves fewer grey levels than this between its darkest and brightest
# pixel is too flat for the model to see edges in (a synthetic scene with its levels squeezed into
# 32 levels: the default weights unsure of every change, coarse mask kept; 48 or more: refined).
PHOTO_MIN_LEVELS = 64


def _flattened(levels: Callable[[], np.ndarray], scaled: np.ndarray) -> bool:
    """True when reading a photo's 16-bit (or 16-bit quantised float) values, ``levels()``, as the
    uint8 ``scaled`` squeezed them into fewer than PHOTO_MIN_LEVELS grey levels and merged at least
    two of the file's values into each: a narrow window of a wider scale (a 16-bit CT or X-ray
    slice with values 30000-34000, data shifted by 32768 from a signed scale, a float photo within
    [0.4, 0.6]), whose contrast the 8-bit reading destroys. 8-bit values saved in a wider file keep
    their levels, so they are read as they are. ``levels`` is called only for such a narrow photo."""
    if not scaled.size or int(scaled.max()) - int(scaled.min()) + 1 >= PHOTO_MIN_LEVELS:
        return False
    return _distinct(levels(), 65536) >= 2 * _distinct(scaled, 256)


def _distinct(values: np.ndarray, size: int) -> int:
    """How many distinct values an unsigned integer array holds, all below ``size`` (a table of
    seen values: no int64 copy of the image, as np.bincount would make)."""
    seen = np.zeros(size, bool)
    seen[values] = True
    return int(np.count_nonzero(seen))


def _stretch_note(label: str, span: str, white: int | float, scaled: np.ndarray) -> str:
    """The warning for a photo read with its values stretched from black to white."""
    scale = "[0, 1]" if isinstance(white, float) else f"0..{white}"
    levels = int(scaled.max()) - int(scaled.min()) + 1
    return (f"{label}: its values run from {span} only, {levels} levels of 256 on the {scale} scale; "
            "read with that range stretched from black to white")


def _float_photo_to_uint8(values: np.ndarray, label: str) -> tuple[np.ndarray, str | None]:
    """A float photo's values in [0, 1] as uint8 (the rule of float masks: 1 = white), stretched
    from black to white where that reading would flatten them (:func:`_flattened`)."""
    gray = (values * np.float32(255) + np.float32(0.5)).astype(np.uint8)
    if not _flattened(lambda: (values * np.float32(65535) + np.float32(0.5)).astype(np.uint16), gray):
        return gray, None
    low, high = float(values.min()), float(values.max())
    stretched = ((values - np.float32(low)) * np.float32(255 / (high - low)) + np.float32(0.5)).astype(np.uint8)
    return stretched, _stretch_note(label, f"{low:.4g} to {high:.4g}", 1.0, gray)


def image_pixels(decoded: Image.Image | np.ndarray, label: str,
                 photo_bits: int | None = None) -> tuple[np.ndarray, str | None]:
    """RGB uint8 (H, W, 3) pixels of a decoded image, before orientation, and a note on how they
    were scaled (or None). ``photo_bits``: the scale of 16-bit (and 32-bit integer) values, None for
    each file's own (:func:`_photo_to_uint8`); 8-bit and floating-point files ignore it."""
    if isinstance(decoded, np.ndarray):
        return _photo_to_uint8(decoded[..., :3], label, photo_bits)
    mode = decoded.mode
    if mode.startswith("I;16") or mode == "I":
        gray, note = _photo_to_uint8(photo_integers(decoded, label), label, photo_bits)
        return np.repeat(gray[..., None], 3, axis=2), note
    if mode == "F":
        gray, note = _float_photo_to_uint8(unit_floats(decoded, label, "image"), label)
        return np.repeat(gray[..., None], 3, axis=2), note
    if mode == "RGB":
        return np.asarray(decoded), None
    # Covers 1, L, LA, La, P, PA, RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV; alpha is dropped.
    # Pillow warns, naming no file, when a palette photo's transparency (PNG tRNS) is dropped
    # converting it to RGB; a photo's alpha is always dropped, so there is nothing to say.
    with warnings_ignored(UserWarning):
        if mode == "La":  # premultiplied grey, which Pillow converts to RGB only by way of LA
            decoded = decoded.convert("LA")
        return np.asarray(decoded.convert("RGB")), None


def decoded_rgb16(decoded: Image.Image | np.ndarray, label: str) -> np.ndarray:
    """RGB uint16 (H, W, 3) of a decoded 16-bit file, before orientation: OpenCV's colour pixels (alpha
    dropped) or a 16-bit grey image repeated in three channels, its values as stored."""
    if isinstance(decoded, np.ndarray):
        return np.ascontiguousarray(decoded[..., :3], dtype=np.uint16)
    return np.repeat(photo_integers(decoded, label)[..., None], 3, axis=2)


def decoded_takes_photo_bits(decoded: Image.Image | np.ndarray) -> bool:
    """Whether ``photo_bits`` shapes a decoded photo's pixels, as :func:`image_pixels` reads them: OpenCV's
    16-bit colour pixels and Pillow's 16- and 32-bit integer modes; 8-bit and floating-point files ignore it."""
    if isinstance(decoded, np.ndarray):
        return True
    return decoded.mode.startswith("I;16") or decoded.mode == "I"


def decoded_stored_bits(decoded: Image.Image | np.ndarray) -> int:
    """Bits per channel of a decoded photo's file: 16 for OpenCV's 16-bit colour pixels and 16-bit
    grey, 32 for floating-point and 32-bit integer files, 8 for the rest (1-bit and palette too)."""
    if isinstance(decoded, np.ndarray):
        return 8 * decoded.dtype.itemsize
    # Older Pillow opens a 16-bit grey PNG as "I" (newer as "I;16"), and a 16-bit PGM as "I": neither
    # format holds more than 16 bits.
    if decoded.mode.startswith("I;16") or (decoded.mode == "I" and decoded.format in ("PNG", "PPM")):
        return 16
    return 32 if decoded.mode in ("I", "F") else 8
