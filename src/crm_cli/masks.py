"""What a mask means: ``MaskData`` and every mask rule, in one place (NumPy + OpenCV, no torch).

- a 0/1 integer mask is binary (:func:`is_zero_one`), and so is a mask of 0 and one other value
  (:attr:`MaskData.object_value`: a 0/3 per-class pseudo-label is not a faint soft mask) when read as
  one object; which masks are label maps is :meth:`MaskData.is_label_map`'s rule;
- a 16-bit mask whose largest value is 2..255 holds 8-bit values (:func:`uint16_full_scale`);
- any mask as a float probability (:func:`mask_to_float`; :func:`strict_probability` refuses
  what it would clip, for masks given through the API) and as the evaluation's boolean
  foreground (:func:`binarize`, > 128 on the 8-bit scale);
- the checks of an RGB image and of a mask's size against its image;
- the size rule: a mask may be a smaller copy of its image with the same aspect ratio;
- the orientation rule: a mask without EXIF orientation that fits only the image's stored
  (un-rotated) pixels is rotated like the image (:func:`drawn_on_stored_pixels`);
- a colour mask with a photo's many colours was probably given in the image's place (:func:`photo_note`).

Decoding files into ``MaskData`` is imageio's job; this module never touches a file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import numpy as np

MASK_KINDS = ("gray8", "gray16", "float", "palette", "alpha", "rgb")
# 65535 = 255 * 257, so a uint16 value v is v / 257 on the 8-bit scale: v / 257 > 128 <=> v > 128 * 257.
UINT16_THRESHOLD = 128 * 257
# A grey mask whose largest value reaches this is a soft mask, never a label map, save for the void id below.
LABEL_ID_LIMIT = 64
# The "void" (ignore) index of VOC and Cityscapes label maps, drawn along object edges beside ids under
# LABEL_ID_LIMIT: on the 8-bit scale it is the only foreground, so the classes would be erased.
VOID_ID = 255
# VOID_ID is void, not a 0/255 mask's object beside a stray id or a drop shadow under 64, where its pixels are
# no more than the ids' or a band along their edges (MaskData._void_is_a_band): VOC draws it about 5 px wide,
# so eroding it by VOID_BAND_ERODE px leaves under VOID_BAND_CORE of it (an object's body keeps most), and at
# least VOID_BAND_NEAR of it lies within VOID_BAND_REACH px of an id (a thin 0/255 wire with a stray 1 does not).
VOID_BAND_ERODE = 3
VOID_BAND_CORE = 0.25
VOID_BAND_REACH = 5
VOID_BAND_NEAR = 0.5
# Grey ids from LABEL_ID_LIMIT up (ADE20K's 150 classes, COCO-stuff's 182, 16-bit instance ids) are read as a
# soft mask, since a soft mask can hold the same few flat values: an unsure network's output enlarged by nearest
# neighbour (largest value 188, 49 levels). Where they look like ids, a warning says so (ids_note): at most
# LABEL_MAP_MAX_IDS values, and at least LABEL_MAP_FLAT_SHARE of the pixels between 0 and the largest value
# inside a 3x3 window of one value, where an anti-aliased, blurred or bilinearly enlarged soft mask's lie on
# ramps along its edges (200 DUTS-TR masks, as they are, scaled to 200, blurred or enlarged 4x: at most 39%;
# 300 synthetic scene, object and instance maps: 66% and more). Measured with the band test below: warned of
# 1 in 200 DUTS-TR masks enlarged 8x from an eighth, 59 of 900 sigmoid outputs of 12-48 px enlarged 4-64x, and
# 283 of 398 synthetic maps (those of more than 32 values are not warned of).
LABEL_MAP_MAX_IDS = 32
LABEL_MAP_FLAT_SHARE = 0.5
# More values than LABEL_MAP_MAX_IDS are warned of too where they also lie on background (an instance map of
# cells or objects, whose ids under half the scale would vanish): at least LABEL_MAP_ON_BACKGROUND of the
# places where two neighbouring values differ have 0 on one side. Measured (session 53): 16-bit instance maps
# of 40-400 round objects 0.82-0.99 apart and 0.48-0.94 touching, 8-bit maps of 33-126 ids alike; 275 sigmoid
# outputs of 12-48 px enlarged 4-64x by nearest neighbour (more than 32 levels, flat, no band) at most 0.04.
LABEL_MAP_ON_BACKGROUND = 0.25
# ... and where some objects are one value each: at least LABEL_MAP_ONE_VALUE_OBJECTS of the non-zero pixels in
# connected objects of a single value. A confident network's sigmoid output of small objects on an exact-0
# background, enlarged by nearest neighbour, steps through several levels inside every object (session 53's
# review: 20 of 20 such maps were warned of without this; 24 of 24 read 0.00), where instance maps read
# 0.25-0.87 apart and 0.01-0.53 touching (dense clusters of 400 cells 0.01-0.03).
LABEL_MAP_ONE_VALUE_OBJECTS = 0.01
# A soft mask enlarged by nearest neighbour is flat too, but its levels lie in a band between background and its
# largest value (MaskData._levels_in_a_band): LABEL_MAP_BAND_SHARE of them in regions touching both, thin for
# their distance from the two (LABEL_MAP_SPREAD: the median of that distance over twice the median depth inside
# a region; such masks 2.2-4.2, synthetic scene maps 5.0-24).
LABEL_MAP_BAND_SHARE = 0.9
LABEL_MAP_SPREAD = 5.0
# And its background meets the band, not the largest value (MaskData._background_meets_top): at most this share
# of the background's edge touches the top value (NN-enlarged DUTS-TR masks that reach the test 0.008 and 0.068;
# two classes of 64 and up side by side 0.47-0.65, one over another 0.12-0.19). Classes nested in one another,
# with no edge of the inner on background, still read as a band.
LABEL_MAP_DIRECT_SHARE = 0.1
# A grey mask under LABEL_ID_LIMIT with at least FAINT_SOFT_LEVELS values, almost none of them (under
# FAINT_SOFT_FLAT_SHARE) inside flat regions, is a faint soft mask (a matte scaled to 0..40), not ids.
FAINT_SOFT_LEVELS = 16
FAINT_SOFT_FLAT_SHARE = 0.1
# The flat share is measured on an even grid of at most this many pixels, whatever the mask's size.
REGION_SAMPLE_PIXELS = 1 << 18
# A palette entry of this colour on black is a binary mask saved as a palette PNG, not a class.
WHITE = [255, 255, 255]
# What tells a photo given as a mask from a colour mask (photo_note): a colour mask holds a palette's
# worth of colours or fewer (a VOC label map saved as RGB holds up to 21, one colour on black with soft
# edges 256 levels), and where JPEG scattered its edges into thousands more, its 256 commonest colours
# still cover most of its pixels (60% of a 96x128 map of 11 VOC classes saved at quality 30, 48% at
# 48x64, 96% at 2048x1536). In a photo they cover a fifth to a third (a 3 MP photo: 20%, crm's
# gallery images 20-35%), in a noisy synthetic scene 3-17%.
PHOTO_COMMON_COLOURS = 256
PHOTO_COMMON_SHARE = 0.4
# Colours are counted on an even grid of at most this many pixels: about 10 ms, whatever the mask's size.
COLOUR_SAMPLE_PIXELS = 1 << 18


class SizeMismatchError(ValueError):
    """A mask's size does not fit its image; the message names both sizes (and both files, where the
    caller read them from files). ``notes``: the warnings found before the mismatch (a photo given as
    a mask, which explains it)."""

    def __init__(self, message: str, notes: list[str] | None = None) -> None:
        super().__init__(message)
        self.notes: list[str] = list(notes or [])


def swaps_axes(orientation: int) -> bool:
    """True for the EXIF orientations 5-8, which transpose the stored pixels (with a flip or a
    quarter turn), so that the upright width is the stored height."""
    return orientation in (5, 6, 7, 8)


def has_boundary(foreground: np.ndarray) -> bool:
    """True when a binary mask holds both foreground and background: only then is there a boundary
    to refine (the engine passes an empty or full mask through without running the model)."""
    return bool(foreground.any()) and not bool(foreground.all())


def largest_value(values: np.ndarray, known: int | None = None) -> int:
    """The largest value of an integer mask (0 when empty); ``known``, when the caller has it
    already (``MaskData.maximum``), is returned without another pass over the values."""
    if known is not None:
        return known
    return int(values.max()) if values.size else 0


def is_zero_one(values: np.ndarray, maximum: int | None = None) -> bool:
    """True for an integer mask whose maximum is 1: a 0/1 binary mask (common from labelling
    tools), not a nearly empty soft mask. ``maximum``: its largest value, when known."""
    return values.dtype.kind in "ui" and values.size > 0 and largest_value(values, maximum) == 1


def uint16_full_scale(values: np.ndarray, maximum: int | None = None) -> int:
    """The value of certain foreground in a uint16 mask: 65535, or 255 when the largest value is
    2..255 (an 8-bit mask saved in a 16-bit file, a common pipeline slip; read as 16-bit it would
    be all background). A largest value of 1 is a 0/1 mask (:func:`is_zero_one`); 256 or more
    keeps the 16-bit scale. ``maximum``: the largest value, when known."""
    if values.size == 0:
        return 65535
    return 255 if 1 < largest_value(values, maximum) <= 255 else 65535


def scale_note(mask: MaskData, mask_name: str) -> str | None:
    """The warning for a 16-bit mask read on the 8-bit scale (:func:`uint16_full_scale`), or None.
    A label map's ids (its void 255 too) are ids, not levels, and a mask of 0 and one value is
    binary (:attr:`MaskData.object_value`), so neither gets one."""
    if mask.kind != "gray16" or uint16_full_scale(mask.values, mask.maximum) != 255 or mask.is_label_map():
        return None
    if mask.object_value is not None:
        return None
    if mask.maximum == 255 and mask.distinct_values == 2 and mask.values_present(0, 1):
        return None  # 0 and 255: a binary mask either way it is told, read as 0 and 1
    return (f"{mask_name}: a 16-bit mask whose largest value is {mask.maximum}, read as 8-bit "
            "values (255 = foreground)")


def void_note(mask: MaskData, mask_name: str) -> str | None:
    """The warning for grey ids under LABEL_ID_LIMIT beside VOID_ID read as one object (255 is no void
    by :meth:`MaskData.is_label_map`'s rule, as a 0/255 mask's object beside a hard shadow), or None: a
    VOC map with a "difficult" object filled with 255 looks the same, and only the user can tell."""
    if mask.kind not in ("gray8", "gray16") or mask.maximum != VOID_ID or mask.is_label_map():
        return None
    ids = mask.values_present(1, VOID_ID)
    if not ids or ids[-1] >= LABEL_ID_LIMIT:
        return None
    return (f"{mask_name}: holds ids {_shown(ids)} and 255, read as one object (255); if it is a label map "
            "whose 255 is void, pass --mode labels")


def ids_note(mask: MaskData, mask_name: str, advice: str = "; if it holds class ids, pass --mode labels") -> str | None:
    """The warning for a grey mask read as a soft mask whose values look like class ids from
    LABEL_ID_LIMIT up (:meth:`MaskData.looks_like_ids`), ending with ``advice``, or None."""
    if not mask.looks_like_ids():
        return None
    return (f"{mask_name}: its values {_shown(mask.label_ids)} fill flat regions as class ids do (ADE20K, "
            "COCO-stuff, instance ids), but a grey mask whose values reach 64 is read as a soft mask: "
            f"foreground above half its scale{advice}")


def value_notes(mask: MaskData, mask_name: str) -> list[str]:
    """The warnings about what a mask's values are, read as one object with no photo to fit: a photo
    (:func:`photo_note`), values that look like class ids (:func:`ids_note`, no advice), a 16-bit mask
    read on the 8-bit scale (:func:`scale_note`). What crm score and crm train say of their files."""
    return [note for note in (photo_note(mask, mask_name), ids_note(mask, mask_name, advice=""),
                              scale_note(mask, mask_name)) if note is not None]


def one_object_notes(mask: MaskData, mask_name: str) -> list[str]:
    """The warnings for a mask that ``--mode auto`` reads as one object although it may be a label map
    (:func:`void_note`, :func:`ids_note`): what crm refine and batch show, refined or passed through."""
    return [note for note in (void_note(mask, mask_name), ids_note(mask, mask_name)) if note is not None]


def _shown(ids: list[int], most: int = 8) -> str:
    """Up to ``most`` ids as text, with "..." for the rest."""
    return ", ".join(str(value) for value in ids[:most]) + (", ..." if len(ids) > most else "")


def weak_mask_note(probability: np.ndarray, mask_name: str) -> str | None:
    """The warning for a coarse mask that is not empty but has no pixel above 0.5, so that refining
    finds no foreground and gives an empty mask (e.g. a faint soft mask), or None."""
    top = float(probability.max()) if probability.size else 0.0
    if not 0.0 < top <= 0.5:
        return None
    # Rounded down, so that 0.499 does not show as 0.50.
    shown = f"{math.floor(top * 100) / 100:.2f}" if top >= 0.01 else f"{top:.1g}"
    return f"{mask_name}: no pixel of the mask is above 0.5 (its largest value is {shown}), so nothing is foreground"


@dataclass(frozen=True, eq=False)
class ColourCount:
    """The colours of a colour file read as a mask by its brightest channel, counted on an even grid
    of its pixels (:func:`count_colours`): how many distinct colours, and the share of the sampled
    pixels that its PHOTO_COMMON_COLOURS commonest colours cover. Counted when first asked for (by
    :func:`photo_note`), so that reading a mask for training does not pay for it."""

    grid: np.ndarray = field(repr=False)  # the sampled pixels, (h, w, 3) uint8 or uint16
    sampled: bool  # counted on a grid of the pixels, not on all of them

    @cached_property
    def _counted(self) -> tuple[int, float]:
        """(distinct colours, share of the commonest), counted once."""
        grid = self.grid >> 8 if self.grid.dtype == np.uint16 else self.grid
        grid = grid.astype(np.uint32)
        packed = (grid[..., 0] << 16) | (grid[..., 1] << 8) | grid[..., 2]
        counts = np.unique(packed, return_counts=True)[1]
        if counts.size > PHOTO_COMMON_COLOURS:
            common = int(np.partition(counts, counts.size - PHOTO_COMMON_COLOURS)[-PHOTO_COMMON_COLOURS:].sum())
        else:
            common = int(counts.sum())
        return int(counts.size), common / max(1, packed.size)

    @property
    def distinct(self) -> int:
        """How many distinct colours the sampled pixels hold."""
        return self._counted[0]

    @property
    def common_share(self) -> float:
        """The share of the sampled pixels that the PHOTO_COMMON_COLOURS commonest colours cover."""
        return self._counted[1]


def count_colours(rgb: np.ndarray) -> ColourCount:
    """:class:`ColourCount` of (H, W, 3) uint8 or uint16 colours (16-bit ones by their high byte),
    on an even grid of at most COLOUR_SAMPLE_PIXELS pixels. Only the grid is taken here (copied when
    it is not all of ``rgb``, so that a large file's pixels can be freed); it is counted when read."""
    height, width = rgb.shape[:2]
    step = max(1, math.ceil(math.sqrt(height * width / COLOUR_SAMPLE_PIXELS)))
    return ColourCount(np.ascontiguousarray(rgb[::step, ::step, :3]), step > 1)


def photo_note(mask: MaskData, mask_name: str) -> str | None:
    """The warning for a colour mask that looks like a photo (its PHOTO_COMMON_COLOURS commonest
    colours cover under PHOTO_COMMON_SHARE of it), most likely the image given as the mask (swapped
    arguments), or None. Grey, palette, alpha and floating-point masks are never photos here: only a
    colour file read by its brightest channel has its colours counted (``MaskData.colours``)."""
    colours = mask.colours
    if mask.kind != "rgb" or colours is None or colours.common_share >= PHOTO_COMMON_SHARE:
        return None
    count = f"{'at least ' if colours.sampled else ''}{colours.distinct} distinct colours"
    return f"{mask_name}: looks like a photo (colour, {count}), not a mask: are the image and mask swapped?"


def native_order(values: np.ndarray) -> np.ndarray:
    """``values`` in native byte order: itself when it is, else a converted copy.

    A big-endian uint16 mask (PIL's "I;16B", np.frombuffer(..., ">u2")) is a uint16 mask, but the
    rules here compare the dtype with np.uint16, which a byte-swapped dtype does not equal."""
    if values.dtype.isnative:
        return values
    return values.astype(values.dtype.newbyteorder("="))


def mask_to_float(mask: np.ndarray, maximum: int | None = None) -> np.ndarray:
    """Any mask dtype -> float32 in [0, 1] (uint8 / 255, uint16 / its :func:`uint16_full_scale`,
    bool and 0/1 as is, float clipped). A float32 mask already in [0, 1] is returned itself, not
    copied (at 4K a copy and a clip cost more than the check), so callers must not write into the
    result. ``maximum``: an integer mask's largest value, when known (else found here, once)."""
    mask = native_order(np.asarray(mask))
    if mask.dtype.kind in "ui":
        maximum = largest_value(mask, maximum)
    if mask.dtype == np.bool_ or is_zero_one(mask, maximum):
        return mask.astype(np.float32)
    if mask.dtype in (np.uint8, np.uint16):
        probability = mask.astype(np.float32)
        scale = 255 if mask.dtype == np.uint8 else uint16_full_scale(mask, maximum)
        probability /= np.float32(scale)  # in place: one 4K array
        return probability
    if mask.dtype == np.float32 and mask.size > 0 and mask.min() >= 0.0 and mask.max() <= 1.0:
        return mask
    return np.clip(mask.astype(np.float32), 0.0, 1.0)


def pil_mode(value: object) -> str | None:
    """The mode ("RGB", "P", "YCbCr", ...) of a PIL image, or None for anything else (PIL is not
    imported: an image from it is known by its class's module)."""
    if type(value).__module__.split(".")[0] != "PIL":
        return None
    mode = getattr(value, "mode", None)
    return mode if isinstance(mode, str) else None


def _path_or_bytes(value: str | bytes | os.PathLike) -> str:
    """How a message names a path, or a file's bytes given where an array belongs (an upload)."""
    if isinstance(value, bytes):
        return f"{len(value)} bytes (a file's contents?)"
    return f"a path ({value!r})"


def checked_mask(mask: object) -> np.ndarray:
    """``mask`` as a 2-D numeric array in native byte order; TypeError for anything else that is not
    numeric, ValueError for another number of dimensions or a PIL palette image (its values are
    palette indices: a foreground index of 15 would read as 15/255, all background)."""
    if mask is None:
        raise TypeError("mask must be an (H, W) array, got None")
    if isinstance(mask, (str, bytes, os.PathLike)):
        raise TypeError(f"mask must be an (H, W) array, got {_path_or_bytes(mask)}; read it first: "
                        "crm_cli.imageio.read_mask(...).probability()")
    if pil_mode(mask) in ("P", "PA"):
        raise ValueError(f"mask is a PIL palette image (mode {pil_mode(mask)}), whose values are palette indices, "
                         "not 0-255 levels; pass crm_cli.imageio.read_mask(path).probability(), or "
                         "np.asarray(mask) != 0 for its foreground (crm_cli.labels.refine_labels for a label map)")
    values = np.asarray(mask)
    if values.dtype.kind not in "buif":
        raise TypeError(f"mask must be a numeric (H, W) array, got dtype {values.dtype}")
    if values.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {values.shape}")
    return native_order(values)


def strict_probability(mask: np.ndarray) -> np.ndarray:
    """:func:`mask_to_float` for a mask given through the API, refusing (ValueError) what it would
    silently clip or binarise: NaN or values outside [0, 1] in a float mask, values other than 0/1
    in an integer mask that is not uint8 or uint16. One min/max pass over a float mask (the CLI's
    masks are float32: 6 ms at 4K)."""
    if mask.size == 0 or mask.dtype in (np.bool_, np.uint8, np.uint16):
        return mask_to_float(mask)
    low, high = mask.min(), mask.max()
    if mask.dtype.kind == "f":
        if np.isnan(low):  # min() propagates NaN
            raise ValueError(f"mask contains NaN ({int(np.count_nonzero(np.isnan(mask)))} pixels); "
                             "a float mask must hold probabilities in [0, 1]")
        if low < 0 or high > 1:
            raise ValueError(f"a float mask must hold probabilities in [0, 1], got values in [{low:g}, {high:g}] "
                             "(divide a 0-255 mask by 255, or pass it as uint8)")
    elif low < 0 or high > 1:
        raise ValueError(f"an integer mask of type {mask.dtype} must hold only 0 and 1, got values in [{low}, {high}]; "
                         "pass a uint8 mask (0-255) or a float mask in [0, 1]")
    # In [0, 1] now, so nothing is clipped: float32 is returned itself, as mask_to_float does.
    return mask if mask.dtype == np.float32 else mask.astype(np.float32)


def binarize(mask: np.ndarray) -> np.ndarray:
    """Boolean foreground (the evaluation's rule): > 128 on 8-bit values; 16-bit scaled to 8-bit
    first (unless it already holds 8-bit values, :func:`uint16_full_scale`); floats in [0, 1]; an
    integer mask holding only 0 and 1 is a 0/1 mask (:func:`is_zero_one`), as everywhere else."""
    mask = native_order(np.asarray(mask))
    if mask.dtype == np.bool_:
        return mask
    if mask.dtype.kind in "ui":
        maximum = largest_value(mask)
        if is_zero_one(mask, maximum):
            return mask > 0
        if mask.dtype == np.uint16:
            # Integer comparison: exact at the threshold and no float64 copy of a 4K mask.
            return mask > (UINT16_THRESHOLD if uint16_full_scale(mask, maximum) == 65535 else 128)
    if np.issubdtype(mask.dtype, np.floating):
        return (mask * 255.0) > 128
    return mask > 128


def check_rgb_image(image: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    """``image`` as a contiguous (H, W, 3) uint8 RGB array of size ``shape`` (when given); TypeError for
    None, a path or a file's bytes (as :func:`checked_mask`), ValueError otherwise, a PIL image in
    another mode than RGB (YCbCr, HSV, LAB also give 3 uint8 channels) included."""
    mode = pil_mode(image)
    if mode is not None and mode != "RGB":
        raise ValueError(f"image must be RGB, got a PIL image in mode {mode}; pass image.convert('RGB')")
    if image is None:
        raise TypeError("image must be an (H, W, 3) uint8 RGB array, got None")
    if isinstance(image, (str, bytes, os.PathLike)):
        raise TypeError(f"image must be an (H, W, 3) uint8 RGB array, got {_path_or_bytes(image)}; read it first: "
                        "crm_cli.imageio.read_image(...)")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
    if shape is not None and image.shape[:2] != tuple(shape):
        raise ValueError(f"image size {image.shape[1]}x{image.shape[0]} does not match mask size "
                         f"{shape[1]}x{shape[0]}")
    return np.ascontiguousarray(image)


def check_mask_fits(mask_shape: tuple[int, ...], image_shape: tuple[int, ...]) -> None:
    """SizeMismatchError (a ValueError) when a mask's (H, W) is not its image's: for an API caller the
    mask is the wrong one for its image, an error of the input, as a file pair's mismatch is."""
    if tuple(mask_shape[:2]) != tuple(image_shape[:2]):
        raise SizeMismatchError(f"mask size {mask_shape[1]}x{mask_shape[0]} does not match image size "
                                f"{image_shape[1]}x{image_shape[0]}")


@dataclass(frozen=True)
class MaskData:
    """A decoded mask: raw values plus how to interpret them.

    ``kind`` is "gray8", "alpha" or "rgb" for uint8 values, "gray16" for uint16 values, "float"
    for float32 probabilities in [0, 1], and "palette" for palette indices (uint8) with
    ``palette`` holding the 768-entry flat RGB palette and ``transparency`` the palette's
    transparency as Pillow reads it from the file (PNG tRNS, a GIF's transparent index): one
    transparent index (int) or one alpha byte per entry (bytes), None when it has none; a label
    map's output is written with both. Frozen, and its values must not be
    written into: what is found from them (:attr:`maximum`, :meth:`is_label_map`) is kept.
    """

    values: np.ndarray
    kind: str
    palette: list[int] | None = None
    orientation: int = 1  # the EXIF orientation its file carried (already applied); 1 = none
    colours: ColourCount | None = None  # an "rgb" mask's file's colours (photo_note), counted when read
    transparency: int | bytes | None = None  # a "palette" mask's transparent index or per-entry alpha
    # Notes of reading its file (imageio.read_mask_noted's) that are still to be shown: a caller that
    # decodes a mask before its photo keeps them here, for pipeline.read_photo_pair to list after the
    # photo's, as it lists a mask it reads itself. Empty otherwise.
    reading_notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in MASK_KINDS:
            raise ValueError(f"unknown mask kind {self.kind!r}; expected one of {', '.join(MASK_KINDS)}")
        if self.values.ndim != 2:
            raise ValueError(f"mask values must be 2-D, got shape {self.values.shape}")

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the mask."""
        return int(self.values.shape[0]), int(self.values.shape[1])

    @cached_property
    def maximum(self) -> int:
        """The largest value of an integer mask (every kind but "float"; 0 when empty), found once:
        the 0/1 rule, the 16-bit scale and the label-map test all read it."""
        if self.kind == "float":
            raise TypeError("maximum is defined for integer masks, not float probabilities")
        return largest_value(self.values)

    @cached_property
    def label_ids(self) -> list[int]:
        """The non-background ids of the mask read as a label map (``labels.label_ids``), found once:
        the ``--labels`` notes and the refinement both read them. uint8 values, and 16-bit ids up to
        VOID_ID, are read from :attr:`_counts`, the histogram :meth:`is_label_map` reads too (one pass
        over the values for both); other values are found with ``np.unique``. (Read here, not through
        ``labels``, which imports this module.)"""
        if self._counts_are_short:
            return [int(value) for value in np.flatnonzero(self._counts) if value != 0]
        return [int(value) for value in self._unique_values if value != 0]

    @cached_property
    def distinct_values(self) -> int:
        """How many distinct values the mask holds, read from :attr:`_counts` where it is short (uint8
        values, or uint16 values up to VOID_ID), else from :attr:`_unique_values`."""
        if self._counts_are_short:
            return int(np.count_nonzero(self._counts))
        return int(self._unique_values.size)

    def values_present(self, low: int, high: int) -> list[int]:
        """The values from ``low`` up to but not including ``high`` that an integer mask holds, ascending:
        read from :attr:`_counts` where it is short (uint8 values, or uint16 values up to VOID_ID), else
        from :attr:`_unique_values`."""
        if self.kind == "float":
            raise TypeError("values_present is defined for integer masks, not float probabilities")
        if self._counts_are_short:
            low, high = max(low, 0), min(high, VOID_ID + 1)
            return [int(value) for value in np.flatnonzero(self._counts[low:high]) + low] if low < high else []
        return [int(value) for value in self._unique_values if low <= value < high]

    @cached_property
    def _unique_values(self) -> np.ndarray:
        """The distinct values, sorted, of a mask whose values :attr:`_counts` does not count short."""
        return np.unique(self.values)

    @cached_property
    def _counts_are_short(self) -> bool:
        """True when :attr:`_counts` is a 256-entry histogram: uint8 values, or uint16 values up to VOID_ID."""
        return self.values.dtype == np.uint8 or (
            self.values.dtype == np.uint16 and self.kind != "float" and self.maximum <= VOID_ID)

    @cached_property
    def _sample_step(self) -> int:
        """The step of the even grid of at most REGION_SAMPLE_PIXELS pixels that shape tests read."""
        return max(1, math.ceil(math.sqrt(self.values.size / REGION_SAMPLE_PIXELS)))

    @cached_property
    def _grid_values(self) -> np.ndarray:
        """The values on the even grid of :attr:`_sample_step` (C order), which the shape tests read."""
        step = self._sample_step
        return np.ascontiguousarray(self.values[::step, ::step])

    @cached_property
    def _grid_distinct(self) -> int:
        """How many distinct values :attr:`_grid_values` holds, counted once (a sort of the sample)."""
        return int(np.unique(self._grid_values).size)

    def _few_values(self) -> bool:
        """True when the mask holds more than two and at most LABEL_MAP_MAX_IDS values. Wider values are
        first counted on an even grid, so a 16-bit soft mask is turned away without sorting every pixel."""
        if not self._counts_are_short and self._sample_step > 1 and self._grid_distinct > LABEL_MAP_MAX_IDS:
            return False
        return 2 < self.distinct_values <= LABEL_MAP_MAX_IDS

    @cached_property
    def _counts(self) -> np.ndarray:
        """How many pixels hold each value, counted once: :meth:`is_label_map`, :attr:`object_value`,
        :attr:`distinct_values` and :attr:`label_ids` all read it. Asked for only where it is short
        (uint8 values, or a largest value up to VOID_ID).

        uint8 values, and uint16 values up to VOID_ID, are counted by ``cv2.calcHist`` (256 entries),
        several times faster than ``np.bincount``, whose int64 copy of a 4K mask is the cost. Its counts
        come as float32, exact up to 2**24 pixels of a value and rounded beyond, never to 0: the readers
        ask only which values are present, and :meth:`_ids_and_void` compares two counts, where that
        rounding does not matter. Other integers given through the API are counted by ``np.bincount``."""
        import cv2

        values = self.values
        if self._counts_are_short and values.size:
            values = np.ascontiguousarray(values)
            counts = cv2.calcHist([values], [0], None, [VOID_ID + 1], [0, VOID_ID + 1])
            return counts.ravel().astype(np.int64)
        return np.bincount(values.ravel(), minlength=256 if values.dtype == np.uint8 else 0)

    @cached_property
    def object_value(self) -> int | None:
        """v for a uint8 or uint16 mask whose pixels are all 0 or v, with 1 < v below its full scale
        (255, or :func:`uint16_full_scale`): read as one object (``--mode binary``, scoring), a
        0/class-id mask (a per-class pseudo-label holding 0 and 3) is binary with v as the object,
        where on its scale it would read as faint or empty. With v under LABEL_ID_LIMIT it is also a
        label map of one class (:meth:`is_label_map`), which ``--mode auto`` refines as one.
        None for any other mask: a 0/1 mask (:func:`is_zero_one`) and a mask of 0 and its full scale
        read as binary already; a mask of one value only keeps its scale (all 0 is empty)."""
        values = self.values
        if self.kind in ("float", "palette") or values.dtype not in (np.uint8, np.uint16):
            return None
        top = self.maximum
        full_scale = 255 if values.dtype == np.uint8 else uint16_full_scale(values, top)
        if not 1 < top < full_scale:
            return None
        if top <= VOID_ID:  # the counts are short (_counts), and is_label_map reads them too
            counts = self._counts
            two_values = bool(counts[0]) and int(np.count_nonzero(counts)) == 2
        else:  # 16-bit values: no bincount, whose int64 copy of a 24 MP mask is 192 MB
            zeros = int(np.count_nonzero(values == 0))
            two_values = 0 < zeros and zeros + int(np.count_nonzero(values == top)) == values.size
        return top if two_values else None

    def probability(self) -> np.ndarray:
        """Foreground probability as float32 (H, W) in [0, 1], the mask read as one object: palette
        and grey label maps (:meth:`is_label_map`): any non-zero id is 1, as :meth:`scoring_values`
        scores them, and so is the object of a mask of 0 and one value (:attr:`object_value`)."""
        if self.kind == "palette":
            return (self.values != 0).astype(np.float32)
        if self.kind == "float":
            return self.values.copy()  # mask_to_float would hand these very values back; callers may write
        # Read on their scale, ids under 64 would be a mask with no pixel above 0.5, refined to nothing.
        if self.object_value is not None or self.is_label_map():
            return (self.values != 0).astype(np.float32)
        return mask_to_float(self.values, self.maximum)

    def scoring_values(self) -> np.ndarray:
        """Values for IoU/mBA (which binarise with > 128 on 8-bit): palette indices and a grey label
        map's values are class ids, not grey levels, so such a mask scores its foreground (id != 0)
        as booleans, as do a 0/1 mask and a mask of 0 and one value (:attr:`object_value`)."""
        if self.kind == "palette" or (self.kind != "float" and (
                is_zero_one(self.values, self.maximum) or self.object_value is not None or self.is_label_map())):
            return self.values != 0  # class ids, a 0/1 mask, or 0 and one value
        return self.values

    def is_label_map(self) -> bool:
        """True when the values look like class ids rather than a binary or soft mask:

        - a palette mask with a used index other than 0, unless its only one is white (a black and
          white mask saved as a palette PNG, read as one object), and an empty one (index 0 only)
          whose palette has a colour entry: a VOC or DAVIS frame the object has left keeps the
          dataset's format;
        - grey ids under LABEL_ID_LIMIT: more than two values, or 0 and one id of 2 or more
          (:attr:`object_value`; a 0/1 mask is binary), unless FAINT_SOFT_LEVELS levels or more lie
          almost all on ramps (a faint soft mask);
        - grey ids under LABEL_ID_LIMIT with the VOID_ID band of VOC and Cityscapes, 8-bit values
          (also in a 16-bit file) with at least one id, VOID_ID and more than two values ({0, 1, 255}
          too: read on the 8-bit scale, class 1 would be background and only the void band foreground),
          where VOID_ID is void: no more pixels than the ids, or a thin band along their edges. A 0/255
          mask with a stray pixel of 1 or a hard drop shadow under 64 beside its object is no label map
          (:func:`void_note` warns of it).

        A soft or anti-aliased mask holds values between LABEL_ID_LIMIT and 254, and a 0/255 mask no
        id, so neither is one; nor are grey ids from LABEL_ID_LIMIT up, which a soft mask can look like
        (:meth:`looks_like_ids`, :func:`ids_note`)."""
        return self._label_map

    @cached_property
    def _label_map(self) -> bool:
        """:meth:`is_label_map`'s answer, found once (the 16-bit note and the mode choice both ask)."""
        if self.kind == "palette":
            used = np.flatnonzero(self._counts[1:]) + 1
            # One class on background keeps its id and palette, as several do (a DAVIS frame holding
            # one object or two comes out in one format).
            if used.size == 0:  # an empty frame: a colour palette is a dataset's classes (VOC, DAVIS)
                return self._colour_palette()
            return used.size > 1 or not self._white_entry(int(used[0]))
        if self.kind not in ("gray8", "gray16"):
            return False
        # Checking the maximum first keeps this cheap on large soft masks.
        top = self.maximum
        if top < LABEL_ID_LIMIT:
            if self.object_value is not None:
                return True
            levels = self.distinct_values
            return levels > 2 and not (levels >= FAINT_SOFT_LEVELS and
                                       self._flat_share() < FAINT_SOFT_FLAT_SHARE)
        return top == VOID_ID and self._ids_and_void()

    def looks_like_ids(self) -> bool:
        """True for a grey mask that is no label map by :meth:`is_label_map` but whose values look like
        class ids from LABEL_ID_LIMIT up: more than two and at most LABEL_MAP_MAX_IDS values, at least one
        between 0 and the largest (beside VOID_ID: two, one from LABEL_ID_LIMIT up; one grey is a trimap's
        or a shadow's, and ids under it are :func:`void_note`'s), mostly inside flat regions
        (LABEL_MAP_FLAT_SHARE) rather than on a soft mask's ramps, and not in a band from background to
        the largest value. Such a mask is still read as a soft mask (see LABEL_MAP_MAX_IDS): only the
        user can tell. Found once."""
        return self._looks_like_ids

    @cached_property
    def _looks_like_ids(self) -> bool:
        """:meth:`looks_like_ids`'s answer."""
        if self.kind not in ("gray8", "gray16") or self.maximum < LABEL_ID_LIMIT or self.is_label_map():
            return False
        if not self._few_values() and not (self._many_values() and self._on_background() >= LABEL_MAP_ON_BACKGROUND
                                           and self._one_value_objects() >= LABEL_MAP_ONE_VALUE_OBJECTS):
            return False
        if self.maximum == VOID_ID and (self.distinct_values < 4 or not self._counts[LABEL_ID_LIMIT:VOID_ID].any()):
            return False
        return self._flat_share() >= LABEL_MAP_FLAT_SHARE and not self._levels_in_a_band()

    def holds_ids(self) -> bool:
        """Whether a grey mask's values read as class ids by any rule here: a label map
        (:meth:`is_label_map`), ids from LABEL_ID_LIMIT up (:meth:`looks_like_ids`), or more than
        LABEL_MAP_MAX_IDS values mostly inside flat regions (a dense ADE20K or COCO-stuff map), where a soft
        mask's levels lie on ramps along its edges."""
        if self.is_label_map() or self.looks_like_ids():
            return True
        return (self.kind in ("gray8", "gray16") and self._many_values()
                and self._flat_share() >= LABEL_MAP_FLAT_SHARE)

    def _many_values(self) -> bool:
        """True when the mask holds more than LABEL_MAP_MAX_IDS values, counted on the even grid of
        :attr:`_sample_step` where the values are wide (no sort of every pixel of a 16-bit mask)."""
        if self._counts_are_short:
            return self.distinct_values > LABEL_MAP_MAX_IDS
        return self._grid_distinct > LABEL_MAP_MAX_IDS

    def _one_value_objects(self) -> float:
        """The share of the non-zero pixels (on the even grid of :attr:`_sample_step`) that lie in connected
        objects holding one value only (LABEL_MAP_ONE_VALUE_OBJECTS)."""
        import cv2

        values = self._grid_values
        count, objects = cv2.connectedComponents((values != 0).astype(np.uint8), connectivity=8)
        if count <= 1:
            return 0.0
        labels, flat = objects.ravel(), values.ravel().astype(np.int64)
        lowest = np.full(count, np.iinfo(np.int64).max)
        highest = np.full(count, -1, np.int64)
        np.minimum.at(lowest, labels, flat)
        np.maximum.at(highest, labels, flat)
        areas = np.bincount(labels, minlength=count)
        one_value = lowest == highest
        one_value[0] = False  # the background
        return float(areas[one_value].sum() / areas[1:].sum())

    def _on_background(self) -> float:
        """The share of the places (on the even grid of :attr:`_sample_step`) where two neighbouring
        values differ that have 0 on one side (LABEL_MAP_ON_BACKGROUND): objects on background, not a
        soft mask's levels stepping one into the next."""
        values = self._grid_values
        changes = on_background = 0
        for first, second in ((values[:, :-1], values[:, 1:]), (values[:-1, :], values[1:, :])):
            differ = first != second
            changes += int(np.count_nonzero(differ))
            on_background += int(np.count_nonzero(differ & ((first == 0) | (second == 0))))
        return on_background / changes if changes else 0.0

    def _levels_in_a_band(self) -> bool:
        """True when the values between 0 and the largest lie in a band from background to the largest
        value, as a soft mask's levels do when it was enlarged by nearest neighbour: their regions touch
        both 0 and the largest value (LABEL_MAP_BAND_SHARE of their pixels), and are thin for their
        distance from the two (LABEL_MAP_SPREAD), and the background meets the band rather than the largest
        value (LABEL_MAP_DIRECT_SHARE). A label map's objects lie apart on background, or its scene's
        regions are wide, or its classes meet the background side by side."""
        import cv2

        # On the grid of _flat_cells: distances in its steps, whose ratio is the measure.
        values, flat = self._flat_cells
        top = self.maximum
        middle = ((values != 0) & (values != top)).astype(np.uint8)
        background, largest = (values == 0).astype(np.uint8), (values == top).astype(np.uint8)
        if not background.any() or not largest.any():
            return False
        kernel = np.ones((3, 3), np.uint8)
        if self._background_meets_top() >= LABEL_MAP_DIRECT_SHARE:
            return False
        count, regions = cv2.connectedComponents(middle, connectivity=8)
        touching_both = np.intersect1d(regions[cv2.dilate(background, kernel) & middle > 0],
                                       regions[cv2.dilate(largest, kernel) & middle > 0])
        areas = np.bincount(regions.ravel(), minlength=count)
        if areas[touching_both].sum() < LABEL_MAP_BAND_SHARE * areas[1:].sum():
            return False
        inside = middle > 0
        from_background = cv2.distanceTransform(1 - background, cv2.DIST_L2, 3)[inside]
        from_largest = cv2.distanceTransform(1 - largest, cv2.DIST_L2, 3)[inside]
        depth = cv2.distanceTransform(flat.astype(np.uint8), cv2.DIST_L2, 3)[inside]
        spread = float(np.median(from_background + from_largest)) / (2.0 * float(np.median(depth)) + 2.0)
        return spread < LABEL_MAP_SPREAD

    def _background_meets_top(self) -> float:
        """The share of the background's edge pixels that touch the largest value rather than a value
        between: near 0 where levels lie between the two (a soft mask's band), high where the top
        value's regions meet the background themselves (one class beside another)."""
        import cv2

        values = np.ascontiguousarray(self.values)
        kernel = np.ones((3, 3), np.uint8)
        background = values == 0
        top = (values == self.maximum).astype(np.uint8)
        middle = ((values != 0) & (values != self.maximum)).astype(np.uint8)
        meets_top = int(np.count_nonzero(background & (cv2.dilate(top, kernel) > 0)))
        meets_middle = int(np.count_nonzero(background & (cv2.dilate(middle, kernel) > 0)))
        total = meets_top + meets_middle
        return meets_top / total if total else 0.0

    def _colour_palette(self) -> bool:
        """True when the palette holds an entry that is not grey (R, G and B not all equal)."""
        if self.palette is None:
            return False
        entries = np.asarray(self.palette[:768], np.int32)
        entries = entries[:entries.size // 3 * 3].reshape(-1, 3)
        return bool(((entries != entries[:, :1]).any(axis=1)).any())

    def _white_entry(self, index: int) -> bool:
        """True when palette entry ``index`` is white."""
        palette = self.palette
        return palette is not None and list(palette[3 * index:3 * index + 3]) == WHITE

    def _ids_and_void(self) -> bool:
        """True for 8-bit values (largest VOID_ID) that are ids under LABEL_ID_LIMIT, at least one,
        and VOID_ID, more than two values in all, where the VOID_ID pixels are no more than the ids'
        (Cityscapes' void regions) or are a band along their edges (:meth:`_void_is_a_band`)."""
        # Every 8-bit soft mask reaches 255: _counts is cv2.calcHist's histogram for these values.
        counts = self._counts
        present = counts > 0
        if present[LABEL_ID_LIMIT:VOID_ID].any() or not present[1:LABEL_ID_LIMIT].any():
            return False
        if int(np.count_nonzero(present)) <= 2:
            return False
        # calcHist counts in float32, exact up to 2**24 pixels and near enough beyond for this comparison.
        ids = int(counts[1:LABEL_ID_LIMIT].sum())
        return int(counts[VOID_ID]) <= ids or self._void_is_a_band()

    @cached_property
    def _flat_cells(self) -> tuple[np.ndarray, np.ndarray]:
        """(the sampled values, whether each sampled pixel's 3x3 window holds one value), on an even grid
        of at most REGION_SAMPLE_PIXELS pixels; a window is read at full resolution, so a step of the grid
        skips pixels, never blurs them."""
        import cv2

        values = np.ascontiguousarray(self.values)
        step = self._sample_step
        kernel = np.ones((3, 3), np.uint8)
        low, high = cv2.erode(values, kernel), cv2.dilate(values, kernel)
        return values[::step, ::step], (low == high)[::step, ::step]

    def _flat_share(self) -> float:
        """The share of the pixels valued between 0 and the largest value that lie inside a 3x3 window
        of one value (0 when there are none): high for a label map's regions, near 0 for a soft mask's
        ramps."""
        values, flat = self._flat_cells
        middle = (values != 0) & (values != self.maximum)
        count = int(np.count_nonzero(middle))
        return int(np.count_nonzero(middle & flat)) / count if count else 0.0

    def _void_is_a_band(self) -> bool:
        """True when the VOID_ID pixels are a thin band along the ids' edges, as VOC draws its void, rather
        than an object's body (see VOID_BAND_ERODE). Asked only of values :meth:`_ids_and_void` has found
        to be ids under LABEL_ID_LIMIT, VOID_ID and 0."""
        import cv2

        kernel = np.ones((3, 3), np.uint8)
        void = (self.values == VOID_ID).astype(np.uint8)
        total = int(np.count_nonzero(void))
        if np.count_nonzero(cv2.erode(void, kernel, iterations=VOID_BAND_ERODE)) >= VOID_BAND_CORE * total:
            return False
        ids = ((self.values != 0) & (self.values != VOID_ID)).astype(np.uint8)
        near = cv2.dilate(ids, kernel, iterations=VOID_BAND_REACH)
        return np.count_nonzero(void & near) >= VOID_BAND_NEAR * total


# ---------------------------------------------------------------------------------------------
# Size matching


class HasSize(Protocol):
    """Anything with an upright ``width`` and ``height`` and the EXIF ``orientation`` that made
    them upright (image_headers.ImageHeader)."""

    width: int
    height: int
    orientation: int


def _same_aspect(small_hw: tuple[int, int], large_hw: tuple[int, int]) -> bool:
    """True when ``small_hw`` is ``large_hw`` times one common scale, each side within 1% or 1 px."""
    scale = (small_hw[0] + small_hw[1]) / (large_hw[0] + large_hw[1])
    for small, large in zip(small_hw, large_hw, strict=True):
        expected = large * scale
        if abs(small - expected) > max(1.0, 0.01 * expected):
            return False
    return True


def fits_image(mask_hw: tuple[int, int], image_hw: tuple[int, int]) -> bool:
    """True when a mask of ``mask_hw`` has the image's size or is a smaller same-aspect copy."""
    if tuple(mask_hw) == tuple(image_hw):
        return True
    smaller = mask_hw[0] <= image_hw[0] and mask_hw[1] <= image_hw[1]
    return smaller and _same_aspect(tuple(mask_hw), tuple(image_hw))


def drawn_on_stored_pixels(mask_hw: tuple[int, int], mask_orientation: int, image_hw: tuple[int, int],
                           image_orientation: int) -> bool:
    """True when a mask was evidently made from the image's stored pixels, before its EXIF
    rotation (a tool that ignored the tag): the image's orientation swaps its axes (5-8), the
    mask carries no orientation of its own, and it fits the stored size but not the upright one.
    Such a mask is to be rotated like the image. Flips and 180° keep the size, so they cannot be
    told apart and are left alone."""
    if not swaps_axes(image_orientation) or mask_orientation != 1:
        return False
    stored_hw = (image_hw[1], image_hw[0])
    return not fits_image(mask_hw, image_hw) and fits_image(mask_hw, stored_hw)


def check_mask_size(mask_hw: tuple[int, int], image_hw: tuple[int, int], image_name: str, mask_name: str,
                    role: str = "mask") -> bool:
    """The size rule: False when the sizes are equal, True when the mask is a smaller copy with the
    same aspect ratio (to be upsampled); SizeMismatchError otherwise, calling the file a ``role``
    ("ground truth" for crm eval's)."""
    (mask_h, mask_w), (image_h, image_w) = mask_hw, image_hw
    if (mask_h, mask_w) == (image_h, image_w):
        return False
    if not fits_image(mask_hw, image_hw):
        raise SizeMismatchError(
            f"{role} {mask_name} is {mask_w}x{mask_h} but image {image_name} is {image_w}x{image_h}; "
            f"a {role} must have the image's size or be a smaller copy with the same aspect ratio"
        )
    return True


def match_mask_to_image(
    mask: MaskData, image_hw: tuple[int, int], image_name: str, mask_name: str, role: str = "mask"
) -> tuple[MaskData, bool]:
    """Fit ``mask`` to an image of size ``image_hw`` = (height, width); ``role`` names the file in the
    error (``check_mask_size``).

    Returns (mask, False) when sizes are equal, (upsampled mask, True) when the mask is a smaller
    copy with the same aspect ratio, and raises SizeMismatchError otherwise.
    """
    import cv2

    image_h, image_w = int(image_hw[0]), int(image_hw[1])
    if not check_mask_size(mask.shape, (image_h, image_w), image_name, mask_name, role):
        return mask, False
    # Interpolating class ids would invent labels in between (or soften a void band), so those use
    # nearest neighbour.
    nearest = mask.kind == "palette" or mask.is_label_map()
    level = None if nearest else mask.object_value
    if level is not None:
        # Between 0 and v (64 or more here: a smaller v is a label map) interpolation would invent
        # faint levels: the object is resized as a 0/1 mask is, then given its value back.
        inside = cv2.resize((mask.values != 0).astype(np.uint8), (image_w, image_h), interpolation=cv2.INTER_LINEAR)
        resized = inside.astype(mask.values.dtype) * mask.values.dtype.type(level)
    else:
        interpolation = cv2.INTER_NEAREST_EXACT if nearest else cv2.INTER_LINEAR
        resized = cv2.resize(mask.values, (image_w, image_h), interpolation=interpolation)
    palette = list(mask.palette) if mask.palette is not None else None
    return MaskData(resized.astype(mask.values.dtype, copy=False), mask.kind, palette, colours=mask.colours,
                    transparency=mask.transparency), True


def check_pair_headers(image: HasSize, mask: HasSize, image_name: str, mask_name: str, role: str = "mask") -> bool:
    """Apply :func:`match_mask_to_image`'s size rule to two headers, before decoding anything.

    Returns True when the mask will be upsampled; raises SizeMismatchError when it cannot fit.
    A mask drawn on the image's stored pixels is checked against that size (it is rotated later).
    """
    mask_hw, image_hw = (mask.height, mask.width), (image.height, image.width)
    if drawn_on_stored_pixels(mask_hw, mask.orientation, image_hw, image.orientation):
        image_hw = (image.width, image.height)
    try:
        return check_mask_size(mask_hw, image_hw, image_name, mask_name, role)
    except SizeMismatchError as exc:
        # A damaged EXIF block can be why: its orientation (a turn) was not applied.
        reasons = [note for note in (getattr(image, "damaged_tags", None), getattr(mask, "damaged_tags", None))
                   if note]
        # Or the mask's own tag turned it: a script that saved an upright mask with the photo's EXIF.
        if swaps_axes(mask.orientation) and fits_image((mask.width, mask.height), image_hw):
            reasons.append(f"{mask_name} carries EXIF orientation {mask.orientation}, which turns its stored "
                           f"{mask.height}x{mask.width} pixels; if they are upright already, remove the tag")
        if not reasons:
            raise
        raise SizeMismatchError(f"{exc} ({'; '.join(reasons)})", exc.notes) from None
