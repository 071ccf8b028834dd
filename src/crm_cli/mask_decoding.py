"""A decoded mask file's values as masks.MaskData (palette, grey, alpha, colour rules; lossy check)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .image_sources import ImageReadError
from .masks import LABEL_ID_LIMIT, MaskData, count_colours
from .sample_values import integer_mask, uint16_to_uint8, unit_floats


def _is_constant(array: np.ndarray) -> bool:
    """True when every pixel of (H, W[, C]) equals the first one."""
    return bool((array == array[0, 0]).all())


def _colour_mask(rgb: np.ndarray, alpha: np.ndarray | None, exact: bool = True) -> MaskData:
    """The mask of an RGB(A) array (uint8 or uint16) by the alpha / equal-channel / colour-coded map
    (:func:`_colour_classes`; ``exact``: not for a lossy file's colours) / brightest-channel rules;
    a colour mask keeps a sample of its colours, by which a photo read as the mask is told (``masks.photo_note``,
    which counts them: a read that never asks does not pay for it)."""
    wide = rgb.dtype == np.uint16
    # A cut-out (crm's own -k cutout, or a photo cut-out) carries the shape in its alpha channel.
    # A constant alpha carries no shape (e.g. an opaque black mask), so then the colour decides.
    if alpha is not None and not _is_constant(alpha):
        return MaskData(alpha, "gray16") if wide else MaskData(alpha, "alpha")
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if (red == green).all() and (red == blue).all():
        return MaskData(np.ascontiguousarray(red), "gray16" if wide else "gray8")
    if not wide and exact and (classes := _colour_classes(rgb)) is not None:
        return classes
    # A colour mask (a red or blue object on black) is as strong as its brightest channel; by
    # luminance pure red would read 0.30 and pure blue 0.11, below the 0.5 of foreground.
    brightest = np.maximum(np.maximum(red, green), blue)
    return MaskData(uint16_to_uint8(brightest) if wide else brightest, "rgb", colours=count_colours(rgb))


# A colour-coded label map (Cityscapes' *_color.png, a VOC map saved as RGB) holds at most a palette's worth
# of exact colours (black included), of more than one hue, each filling regions of its own. A colour mask's
# colours are shades of one (a red object's soft edges on black), an anti-aliased or resized map's edges hold
# blends found on no region, and a photo's colours are thousands.
COLOUR_MAP_MAX_COLOURS = 256
# At most this share of the coloured pixels may have a colour no region holds (the edges' blends).
COLOUR_MAP_BLEND_SHARE = 0.01
# A shade of a colour c is t * c, each channel rounded: off it by at most this many levels.
SHADE_TOLERANCE = 2.0
# The decision is made on an even sample of at most this many pixels.
COLOUR_SAMPLE = 1 << 16


def _colour_classes(rgb: np.ndarray) -> MaskData | None:
    """A uint8 RGB colour-coded label map read as one object, every colour but black foreground (0/255), or
    None when it is none: on an even sample of COLOUR_SAMPLE pixels, at most COLOUR_MAP_MAX_COLOURS colours,
    not all black and shades of one colour (:func:`_several_hues`), and at most COLOUR_MAP_BLEND_SHARE of the
    coloured pixels of a colour that is nowhere the colour of its four neighbours (a blend along edges). Read
    by the brightest channel instead, a dark class's colour (VOC's (64, 0, 0)) falls under half the scale and
    is lost. Its classes are not told apart: their ids would be the ranks of the colours each file holds,
    which differ from file to file (a palette PNG keeps them)."""
    step = max(1, int(np.ceil(np.sqrt(rgb.shape[0] * rgb.shape[1] / COLOUR_SAMPLE))))
    sample = _packed(rgb[::step, ::step])
    colours, numbered = np.unique(sample, return_inverse=True)
    if colours.size > COLOUR_MAP_MAX_COLOURS or not _several_hues(colours):
        return None
    numbered = numbered.reshape(sample.shape)
    inner = numbered[1:-1, 1:-1]
    flat = (inner == numbered[:-2, 1:-1]) & (inner == numbered[2:, 1:-1]) & (inner == numbered[1:-1, :-2]) & \
        (inner == numbered[1:-1, 2:])
    in_regions = np.bincount(inner[flat], minlength=colours.size) > 0
    counts = np.bincount(numbered.ravel(), minlength=colours.size)
    coloured = colours != 0
    if counts[coloured & ~in_regions].sum() > COLOUR_MAP_BLEND_SHARE * counts[coloured].sum():
        return None
    values = np.where(rgb.any(axis=2), np.uint8(255), np.uint8(0))
    return MaskData(values, "rgb", colours=count_colours(rgb))


def _several_hues(colours: np.ndarray) -> bool:
    """Whether packed colours (:func:`_packed`) other than black are not all shades of the brightest one:
    each shade is t times it, channel by channel, give or take SHADE_TOLERANCE levels of rounding (the soft
    edges of an orange object on black, (5, 3, 0) beside (255, 140, 0))."""
    channels = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], axis=1).astype(np.float32)
    channels = channels[channels.max(axis=1) > 0]
    if channels.shape[0] < 2:
        return False
    brightest = channels[np.argmax(channels.max(axis=1))]
    scale = channels.max(axis=1, keepdims=True) / brightest.max()
    return bool(np.abs(channels - scale * brightest).max() > SHADE_TOLERANCE)


def _packed(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) as one uint32 per pixel, 0xRRGGBB."""
    return (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]


def _palette_alpha(transparency: int | bytes | None) -> np.ndarray:
    """The alpha (uint8, 256 entries) of each palette entry under ``transparency`` as Pillow reads it
    (one transparent index, or the alpha bytes of the first entries; those past them are opaque)."""
    alpha = np.full(256, 255, np.uint8)
    if isinstance(transparency, bytes):
        given = np.frombuffer(transparency[:256], np.uint8)
        alpha[:given.size] = given
    elif isinstance(transparency, int) and 0 <= transparency < 256:
        alpha[transparency] = 0
    return alpha


def _palette_mask(indices: np.ndarray, palette: list[int], transparency: int | bytes | None = None) -> MaskData:
    """The mask of a palette image from its indices and its palette (as stored, 3 values per entry).

    - Exactly two used entries, one black, are a binary mask whose other entry is the object,
      whatever its colour: read by index when black is index 0 (a VOC class on background; VOC's
      car is grey), otherwise renumbered 0 = black, 1 = the object.
    - Every used entry grey (R = G = B): the colours are an 8-bit grey mask (a quantised black and
      white or soft mask), unless each colour equals its index and that grey mask is a label map: ids
      in a grey palette stay a palette label map (its palette kept).
    - Otherwise the indices are label ids (VOC style).
    Entries missing from a short palette have no colour, so their indices are ids. The palette's
    ``transparency`` (Pillow's ``info["transparency"]``) is kept wherever the palette is, renumbered
    with it, so that a label map is written back with it.
    """
    full_palette = (palette + [0] * 768)[:768]
    if not isinstance(transparency, int | bytes):
        transparency = None
    by_index = MaskData(np.ascontiguousarray(indices), "palette", full_palette, transparency=transparency)
    used = np.flatnonzero(np.bincount(indices.ravel(), minlength=256))
    if int(used[-1]) >= len(palette) // 3:
        return by_index
    colours = np.array(full_palette, np.uint8).reshape(256, 3)
    used_colours = colours[used]
    black = ~used_colours.any(axis=1)
    two_tone = used.size == 2 and bool(black.any())
    if two_tone and black[0] and used[0] == 0:
        return by_index  # index != 0 is already the object
    if (used_colours == used_colours[:, :1]).all():
        grey = MaskData(colours[:, 0][indices], "gray8")
        # An identity grey palette (Pillow's convert("P") of a grey image, MATLAB's gray(256)) holds
        # whatever the grey image held: ids (from 64 up too) stay a palette label map, a soft mask stays
        # soft. One used entry (an empty frame) is left to the palette's colours (MaskData.is_label_map).
        if (used_colours[:, 0] == used).all() and (used.size == 1 or grey.holds_ids()):
            return by_index
        return grey
    if two_tone:
        # Black has a non-zero index, so index != 0 would make it the object: renumber as
        # 0 = black, 1 = the object, keeping its colour for a label-map output.
        foreground = int(used[~black][0])
        binary = (indices == foreground).astype(np.uint8)
        # The two entries kept keep their alpha; None when both are opaque.
        alpha = _palette_alpha(transparency)[[int(used[black][0]), foreground]]
        renumbered = bytes(alpha.tolist()) if int(alpha.min()) < 255 else None
        return MaskData(binary, "palette", [0, 0, 0, *colours[foreground].tolist()] + [0] * 762,
                        transparency=renumbered)
    return by_index


def _transparency_alpha(decoded: Image.Image) -> np.ndarray | None:
    """The alpha channel that a PNG tRNS chunk or a GIF's transparent index gives a 1, L, P or RGB
    image (Pillow keeps it aside, in ``info``), or None when it has none."""
    if decoded.info.get("transparency") is None or decoded.mode not in ("1", "L", "P", "RGB"):
        return None
    with_alpha = decoded.convert("LA" if decoded.mode in ("1", "L") else "RGBA")
    return np.ascontiguousarray(np.asarray(with_alpha)[..., -1])


def _hides_only_background(mask: MaskData, alpha: np.ndarray) -> bool:
    """True when ``alpha`` makes exactly the mask's 0 (background) pixels transparent and every other
    pixel opaque: it then draws the shape the values draw, and the values say more (soft levels)."""
    zero = mask.values == 0
    return bool(((alpha == 0) == zero).all() and (alpha[~zero] == 255).all())


def _transparency_draws_the_mask(mask: MaskData, alpha: np.ndarray) -> bool:
    """Whether a transparency kept beside the colours (tRNS, GIF) is the mask rather than the values:
    when the values draw nothing (a white object on a transparent white), or when they are a photo's
    colours (LABEL_ID_LIMIT or more levels: a cut-out quantised to a palette or saved with a key
    colour) that the transparency does not merely follow. A binary mask, class ids (a VOC void
    index made transparent) and soft levels keep their values, whatever is transparent."""
    if _is_constant(alpha):
        return False
    if mask.distinct_values == 1:
        return True
    return mask.distinct_values >= LABEL_ID_LIMIT and not _hides_only_background(mask, alpha)


def decoded_mask_data(decoded: Image.Image | np.ndarray, label: str, key_alpha: np.ndarray | None = None,
                      lossy: bool = False) -> MaskData:
    """Mask values of a decoded file, before orientation, by the colour rules, except where a
    transparency (tRNS, GIF) draws the mask instead (:func:`_transparency_draws_the_mask`). ``key_alpha``:
    the transparency of 16-bit colour pixels (uint16), which Pillow does not decode; ``lossy``: the file's
    colours are not exact (JPEG), so they are no colour-coded label map."""
    mask = _colour_mask_data(decoded, label, exact=not lossy)
    if isinstance(decoded, Image.Image):
        alpha = _transparency_alpha(decoded)
    else:
        alpha = None if key_alpha is None else uint16_to_uint8(key_alpha)
    if alpha is not None and _transparency_draws_the_mask(mask, alpha):
        return MaskData(alpha, "alpha")
    return mask


def _colour_mask_data(decoded: Image.Image | np.ndarray, label: str, exact: bool = True) -> MaskData:
    """Mask values of a decoded file by its colours (and alpha channel), before orientation."""
    if isinstance(decoded, np.ndarray):
        alpha = decoded[..., 3] if decoded.shape[2] == 4 else None
        return _colour_mask(decoded[..., :3], alpha, exact)
    mode = decoded.mode
    # Never convert("L") here: it clips 16-bit values and maps palette indices to luminance.
    if mode == "1":
        return MaskData(np.asarray(decoded.convert("L")), "gray8")
    if mode == "L":
        return MaskData(np.asarray(decoded), "gray8")
    if mode.startswith("I;16") or mode == "I":
        return MaskData(integer_mask(decoded, label), "gray16")
    if mode in ("P", "PA"):
        indices = np.asarray(decoded)
        if indices.ndim == 3:
            indices = indices[..., 0]
        transparency = decoded.info.get("transparency") if mode == "P" else None
        return _palette_mask(indices, list(decoded.getpalette("RGB") or []), transparency)
    if mode in ("LA", "La"):
        # The RGBA rule: a cut-out's shape is in its alpha whenever that varies.
        gray_alpha = np.asarray(decoded.convert("LA"))
        gray, alpha = gray_alpha[..., 0], gray_alpha[..., 1]
        if not _is_constant(alpha):
            return MaskData(np.ascontiguousarray(alpha), "alpha")
        return MaskData(np.ascontiguousarray(gray), "gray8")
    if mode == "F":
        return MaskData(unit_floats(decoded, label), "float")
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(decoded.convert("RGBA"))
        return _colour_mask(rgba[..., :3], rgba[..., 3], exact)
    rgb = decoded if mode == "RGB" else decoded.convert("RGB")
    return _colour_mask(np.asarray(rgb), None, exact)


def check_lossy_ids(mask: MaskData, lossy: str | None, label: str) -> None:
    """Refuse a mask in a lossy format (JPEG, lossy WebP, JPEG-compressed TIFF, AVIF) that reads as a label
    map: lossy compression turns the edges of a 0/1 mask or of class ids into other small values (0/1
    becomes 0, 1 and 2), which would be refined as extra labels. A 0-255 mask only gets blurred edges,
    which a soft mask may have."""
    if lossy is None:
        return
    if mask.kind == "gray8" and mask.is_label_map():
        compression = "JPEG's lossy compression" if lossy == "JPEG" else "its lossy compression"
        article = "an" if lossy.startswith(("A", "H")) else "a"  # an AVIF, an HEIF
        raise ImageReadError(
            f"{label}: {article} {lossy} mask of small values (0 to {mask.maximum}: a 0/1 mask or class ids?), which "
            f"{compression} has altered at the edges; save the mask as PNG (0/255 for one object)")
