"""The ``auto`` schedule: per image, start at the coarsest stage that cannot erase what the mask holds.

Two measurements of the coarse mask decide:

* **Detail.** A stage at ratio r sees the mask through cells of about 1/r full-resolution pixels.
  Structures thinner than that, and narrower gaps, cannot survive it, and later stages do not bring
  them back. For each candidate first ratio we count the pixels that an opening plus a closing with
  a square of side 2/r + 1 would change, per boundary pixel. Blocky masks from a low-resolution
  network hold almost none and start at the coarsest stage that fits the image. A mask with too much
  detail even for the finest coarse stage (railings, wires) holds structure the model cannot be
  trusted to judge: the trust region asks for strong evidence at its boundary too, as it does for a
  precise mask.
* **Edge alignment.** A mask whose boundary sits on the image's edges (a network run at high
  resolution, SAM, a hand-made mask) is already precise: its boundary pixels carry far stronger
  image gradients than the pixels a few px away. Such a mask runs the final stage only, and the
  trust region (``guard.py``) asks for strong evidence for every change, in proportion to this trust.
  Where a coarse stage fits, the trust is scaled by the mask's fine detail: an upsampled
  low-resolution mask can sit near the edges with a smooth boundary a few px off them.
* **Region pass.** A precise mask can still be wrong by whole regions (a shadow taken for the
  object, background letters, a hole), which only a coarse stage sees. Unless it holds too much
  detail for one, a coarse-to-fine pass runs first, under a trust region of distance only (the
  coarse stages' judgement is what is asked for), and only its thick changes that are not bands
  along the boundary (``guard.region_changes``) go into the mask the final stage starts from, less
  the holes whose outline lies on the photo's edges (``guard.holes_on_edges``). The pass ends at
  its last stage of at most ``REGION_MAX_PIXELS``.

* **Small images** (no coarse stage fits): only the final stage runs; trust follows its own
  alignment ramp, and the detail is still probed at the ladder's finest coarse ratio. A mask whose
  probe reads pixel-level detail gets a ``min_shift``: when the final stage moves its boundary by
  less than that on average, the moves near the boundary are undone (``guard.keep_precise_boundary``).
  The final stage runs on the photo enlarged by ``SMALL_FINAL_SCALE`` and is averaged with its run
  on the mirrored photo (both cheap at these sizes; a long strip beyond ``SMALL_ENLARGED_MAX_PIXELS``
  and ``SMALL_MIRRORED_MAX_PIXELS`` follows the photo-size limits below instead).
* **Photos up to ``ENLARGED_FINAL_MAX_PIXELS``** (Full HD, 2K) run their final stage enlarged too,
  after the coarse stages, and mirrored up to ``MIRRORED_FINAL_MAX_PIXELS``; larger ones (4K) keep
  it at ratio 1 for speed. Both limits are a property of the weights (``FinalStage``): a weights
  file's sidecar may set its own.

The free distance of the trust region follows the first stage: ``GUARD_CELLS / r`` px, at least
``MIN_FREE_PX``. After the final stage, an image whose changes the model was unsure of (below
``MIN_CHANGE_CONFIDENCE``, or the weights' own ``FinalStage.min_change_confidence``) keeps its
coarse mask (the engine applies it). Pure NumPy/OpenCV, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import cv2
import numpy as np

from .boxes import grown_box, nonzero_box, worth_a_box
from .photo_memo import memoized
from .photo_noise import WHITE_NOISE_PER_RESIDUAL, PhotoNoise, noise_crops, noise_gradient, reduced_noise_gradient

# A first stage at ratio r may destroy at most this much detail: pixels changed by an opening plus
# a closing of side 2/r + 1, per boundary pixel. At r = 0.25 on 1918x1280 masks: carvana-dev
# (synthetic blocky) 90th percentile 0.006, IS-Net at 256 px 0.036, IS-Net at 1024 px median 0.08.
DETAIL_TOLERANCE = 0.05
# Free boundary movement of a schedule starting at ratio r, in stage-r cells (see guard.py), and
# its floor (small images start at ratio 1 only because coarser stages do not fit, not because
# their errors are small: DUTS-size masks hold errors of 20-70 px).
GUARD_CELLS = 8
MIN_FREE_PX = 16.0
# Edge alignment (mean gradient 0.5-2.5 px from the boundary / 4-8 px from it) at which a mask counts
# as precise (final stage only, trust starts; SHARP_PRECISE_MIN is a second way in) and fully
# trusted. carvana-dev's synthetic blocky masks: median 1.1; IS-Net at 256 px: 1.9 (3.6 for the
# third above 2.2); paper-perturbed DUTS: 1.5; IS-Net at 1024 px: 8.7. Full trust at 4.5 instead
# of 10 held the blobby IS-Net 256 masks that pass 2.2 to their boundary: 1.7 mBA lower on those
# 34, no gain on IS-Net 1024.
TRUST_LOW, TRUST_HIGH = 2.2, 10.0
# The same ramp for images too small for any coarse stage (DUTS-size photos of 183-400 px), where
# the alignment of a given precision reads lower (4-8 px is a larger part of the object): IS-Net
# masks of the 350 DUTS held-out photos median 2.4, the paper's perturbation 1.4. Against the 2K
# ramp (crm eval, 350 photos each): IS-Net masks 96.68 / 70.43 -> 97.11 / 72.60, perturbed
# 95.11 / 67.05 -> 95.13 / 67.49 (chosen by an offline simulation over both sets).
SMALL_TRUST_LOW, SMALL_TRUST_HIGH = 1.3, 6.0
# Where a coarse stage fits, an edge-aligned mask is trusted only as far as it also holds the fine
# detail of a high-resolution mask: its detail at TRUST_DETAIL_RATIO scales the alignment's trust,
# from 0 at TRUST_DETAIL_LOW to full at TRUST_DETAIL_HIGH. A network run at low resolution and
# upsampled (IS-Net at 256 px on 1918x1280 cars) can sit near the image's edges while its smooth
# boundary is a few px off them: the 34 such masks there read 0.002-0.27 (median 0.05), IS-Net at
# 1024 px 0.03-0.40 (median 0.12). crm eval, auto, 96 cars each: IS-Net 256 96.49 / 73.34 ->
# 96.50 / 73.51 (26 cars moved, -0.40 to +2.40 mBA); IS-Net 1024, carvana-dev and the thin set
# unchanged to the hundredth, with the same images below coarse. Scaling by the detail alone (no
# max) with a window of 0.05-0.15 helped the 34 masks more (72.83 against 72.48 for 0.03-0.08) but
# put 6 IS-Net 1024 cars below coarse instead of 3.
TRUST_DETAIL_RATIO = 0.25
TRUST_DETAIL_LOW, TRUST_DETAIL_HIGH = 0.03, 0.08
ALIGNMENT_SIDE = 2048  # edge alignment is measured with the long side reduced to at most this
# ... but never with the short side reduced below this (or below its own length, when shorter).
# An elongated photo (a line-scan camera's 20000x300 strip) reduced by its long side lost its short
# side to a few dozen px, where the measuring bands (0.5-2.5 px and 4-8 px from the boundary) reach
# across the object and the averaging of the reduction takes the texture away from the 4-8 px band
# only. A 6000x300 strip with a blocky mask read an alignment of a precise mask there, so the guard
# held its coarse boundary (kept; IoU 96.75) where, measured unreduced, it is refined (IoU 99.07).
# Every photo up to 4:1 whose short side is at least this is reduced as before (a 21:9 5040x2160
# frame to 2048x878, a 4000x1000 panorama to 2048x512).
ALIGNMENT_MIN_SHORT_SIDE = 512
# ... and never measured on more pixels than this: the floor alone would measure a 65535x600 strip
# on 28 MP (seconds and a GB for one measure); it is measured on 16.8 MP, its short side 392 px.
ALIGNMENT_MAX_PIXELS = 4 * ALIGNMENT_SIDE**2
# The blur (px) under the edge alignment's gradient.
ALIGNMENT_BLUR = 1.0
# outline_sharpness reads the score that this share of a piece's outline pixels fall below: the outline
# must be sharp nearly all along it (guard.sharp_lines).
OUTLINE_SHARP_SHARE = 0.1
# ... and takes the gradient off the outline as at least this: the 3x3 Sobel magnitude of a step of
# four grey levels (a rendered gradient's banding steps by one).
OUTLINE_MIN_GRADIENT = 16.0
# Noise independent from pixel to pixel adds its own gradient to both of the alignment's bands, so a
# mask on a noisy edge read as one off the edges and was refined freely: do_no_harm's "disc under
# noise" (a disc's exact mask, the disc 20 grey levels above its background under noise of std 30)
# read 1.31 and came back at 98.48 / 68.47 at 2048x1536 (IoU / mBA against itself), 98.17 / 64.98 at
# 1024x768. Where the noise's own gradient (photo_noise: its std at full size, times the gain of
# white noise through the reduction, blur and Sobel) is at least this share of the outer band's mean,
# it is subtracted from both bands, and what is left of the outer band is taken as at least
# NOISE_MIN_EXCESS of that gradient (the floor reads within about 3% of pure noise's, either way: the
# second difference of integer grey levels moves its median in steps of a quarter level, and clipping
# adds to it, so the remainder cannot be read finer): a boundary whose gradient exceeds the noise's by
# half of it there reads 10, full trust. The disc reads 5.62 and comes back at 99.68 / 90.21 (1024x768:
# 100 / 100; with edge_snap's noise rule). Every 12th car of carvana-dev under added normal noise (8 cars),
# its ground truth given as the coarse mask: std 10 98.72 / 84.97 -> 99.16 / 86.92, std 20 98.23 /
# 82.12 -> 99.32 / 87.69; their blocky coarse masks 74.39 -> 74.43 and 70.49 -> 70.52 mBA (IoU 97.21
# and 96.07 either way; each car within 0.2 mBA). A share of 0.5 left std 10 unchanged. On the dev
# sets' coarse masks the share reaches at most 0.25 (the sharpness of a DUTS photo of grass, whose
# fine texture the noise estimate partly reads as noise), so none of them moves; a photo of finer
# texture can reach it, and is then refined less. The floor has no least noise level of its own: the
# generated scene (noise of +-12 levels on its blotches, read as 3.4-4) with its exact mask reaches it
# (alignment 9.3 -> 13.4 and trust 0.91 -> 1 at 1024x768, 13.9 -> 24.2 at 2048x1536; its refined
# mask the same to the bit at both sizes).
# Only where a coarse stage fits: on a small photo (the final stage alone, under the lenient small
# ramp) the floor took a 320x240 photo's blocky masks on a noisy flat background for precise ones, and
# they stayed coarse (test_coco's shapes: two of three instances). The cost where it applies is of the
# same kind, and smaller: the same shapes at 2048x1536, their masks blocky by 8-px cells (4 px off at
# most), read as on the edges, as they do on a clean photo, and are refined less (IoU 0.9858 / 0.9786
# / 0.9826 coarse, 0.9989 / 0.9998 / 0.9991 refined before, 0.9936 / 0.9940 / 0.9931 now; 32-px cells
# 0.9988 / 0.9997 / 0.9989 before, 0.9986 / 0.9997 / 0.9989 now).
NOISE_FLOOR_SHARE = 0.3
NOISE_MIN_EXCESS = 0.05
# Schedule.noise (what the edge snap reads) is 0 below this many grey levels: fainter noise is left to
# edge_snap.SNAP_MIN_VARIANCE, and photos whose residual level cannot reach it skip the half-size read.
NOISE_MIN_LEVEL = 4.0
# A precise mask (where a coarse stage fits) whose boundary runs beside the image's edges rather
# than on them gets no trust: its boundary sharpness (the mean gradient on the pixels touching the
# boundary over the mean 1-3 px from it, unblurred) is below this. The edge alignment's 0.5-2.5 px
# band cannot tell a smooth boundary a pixel or two off the edges from one on them. The 34 IS-Net
# 256 cars that pass TRUST_LOW read 1.04-1.62, the 96 IS-Net 1024 cars 2.22-4.51 (4K: 1.06-1.43
# against 2.22-3.79). crm eval, auto: IS-Net 256 96.57 / 73.88 -> 96.58 / 74.09 (30 of the 34 up,
# one down by 0.01 mBA); 4K IS-Net 256 74.43 -> 74.46 mBA (4 up); IS-Net 1024, carvana-dev and the
# thin set (its precise masks are detailed: DETAILED_MASK_TRUST) unchanged image for image.
SHARP_BOUNDARY_MIN = 1.9
# ... unless the alignment and detail already trust it this much: a precise mask on a soft-focus
# photo also reads low (a disc on its own edge blurred by sigma 1.5 px: 1.83), but its gradient
# lies right at the boundary, so its alignment is high (28 there). The 34 IS-Net 256 cars are
# trusted 0-0.30 before this rule.
SHARP_BOUNDARY_MAX_TRUST = 0.5
# A mask whose alignment falls short of TRUST_LOW (but reaches SMALL_TRUST_LOW) still counts as
# precise when its boundary sharpness reaches this. The alignment's bands are fixed in pixels, so a
# given precision reads lower on a smaller photo: IS-Net 1024 car_03a857ce842d_09 reads 3.15 at
# 1918x1280, 2.16 at 960x641 and 1.79 at 720x481, where a 0.5 stage then cost it 2.3 IoU and 7.0 mBA.
# Its sharpness reads 2.4-2.7 at all three sizes. Of the masks below TRUST_LOW where a coarse stage
# fits, the highest sharpness elsewhere: IS-Net 256 cars 1.38 (1918), 1.67 (960), 1.97 (720); the
# blocky synthetic masks 1.18-1.41; the thin set 1.99; every IS-Net 1024 car at 1280 and 1918 px
# passes TRUST_LOW.
SHARP_PRECISE_MIN = 2.2
# Trust at the boundary of a mask too detailed for any coarser stage (thin-structure set, 13 such
# masks that are not edge-aligned: ΔIoU/ΔmBA -0.38/-3.51 with no pull at the boundary, +1.26/-0.06
# with the full pull).
DETAILED_MASK_TRUST = 1.0
# On images too small for any coarse stage the detail is measured at the ladder's finest coarse
# ratio anyway, against this tolerance: the paper's perturbation leaves small steps in a mask
# (DUTS held-out median 0.06, 95th percentile 0.24), real thin parts far more (IS-Net masks of a
# folding chair's tubes). 0.3 against none: DUTS held-out with IS-Net masks 97.11 / 72.60 ->
# 97.21 / 73.18, perturbed 95.13 / 67.49 -> 95.13 / 67.59 (0.2: the perturbed IoU fell 0.11).
SMALL_DETAIL_TOLERANCE = 0.3
# On images too small for any coarse stage, a mask whose detail probe reads at least SMALL_KEEP_DETAIL
# holds pixel-level structure (a network mask at full resolution, not a smoothed or blocky one).
# When the final stage moves such a boundary by less than SMALL_MIN_SHIFT px on average (changed
# pixels per coarse boundary pixel), it is nudging a precise boundary, and on DUTS photos with IS-Net
# masks those nudges cost mBA; the changes within guard.SHIFT_BAND_PX of the boundary are undone.
# crm eval, 350 DUTS held-out photos each: IS-Net masks 97.21 / 73.18 -> 97.31 / 73.90; the paper's
# perturbation, low-resolution and blocky masks within 0.07. Undoing every move under 2 px with no
# detail condition lost the low-resolution and blocky masks most of their gain. It still pays beside
# the unsure-change gate below: without it the IS-Net masks fall from 97.69 / 75.65 to 97.67 / 75.57
# and the photos more than 1 mBA below coarse rise from 10 to 16 (the perturbed set within 0.01).
SMALL_KEEP_DETAIL = 0.1
SMALL_MIN_SHIFT = 1.0
# With the guard on, a refinement whose changes the model itself is unsure of is not taken: when the
# mean |2p - 1| over the pixels that changed side (guard.change_confidence) is below this, the image
# keeps its coarse mask. The model draws its wrong changes unsure: of 350 DUTS held-out photos with
# IS-Net masks, the 240 below 0.5 lost 1.23 mBA on average; with the paper's perturbation the 32
# below it lost 1.26 and the 314 above it gained 9.36. crm eval, default weights: IS-Net masks
# 97.49 / 74.81 -> 97.69 / 75.65 (images more than 1 mBA below coarse 102 -> 10), the paper's
# perturbation 95.14 / 69.42 -> 95.11 / 69.54, thin set 90.33 / 78.68 -> 90.17 / 78.69 (speckle the
# model cleaned unsure is given up); carvana-dev and IS-Net 256 unchanged image for image.
MIN_CHANGE_CONFIDENCE = 0.5
# The gate is not a hard cut: within this distance of the threshold the refinement is taken in part,
# its share rising linearly from 0 to 1 (guard.change_weight; half of it at the threshold, so a pixel
# of a binary coarse mask changes side only above it). A frame sequence whose confidence hovers at the
# threshold (0.475-0.515 on ten frames shifted 1 px each) no longer flips between the coarse mask and
# the refined one: pixels changing side between neighbouring frames 560 -> 271 (the coarse mask's:
# 182). crm eval, 350 DUTS held-out photos each, hard cut -> ramp: low-resolution masks 97.51 / 70.47
# -> 97.52 / 70.44 (images below coarse in IoU 51 -> 48), IS-Net masks 97.69 / 75.67 -> 97.69 / 75.67
# (below coarse in mBA 17 -> 16); thin set 90.19 / 78.74 either way; carvana-dev has no image near it.
# 0.05 halved the flicker a little more (232) but cost the low-resolution masks 0.16 mBA.
CHANGE_CONFIDENCE_RAMP = 0.025
# How sure the model must be for the trust region to let it change a pixel far from the coarse boundary
# (and anywhere on a trusted mask) when the final stage refines alone, with no coarse stage and no
# region pass before it: the guard's own 0.99 (guard.GUARD_CERTAINTY) unless the weights say otherwise.
# Such masks are precise, or hold detail finer than any coarse stage (SAM-like masks of railings
# whose gaps are merged), so the final stage is the only one that can correct their regions. For the
# default's main weights 0.95 raised the thin set 0.55 mBA but harmed 2 more IS-Net masks of the same
# photos by over 1 mBA (session 46), so no shipped weights lower it.
FINAL_ONLY_CERTAINTY = 0.99
# On images too small for any coarse stage the final stage is also run on the mirrored photo and the
# two answers averaged (a second pass of a stage that takes about 0.07 s there). crm eval, 350 DUTS
# held-out photos each, without -> with: paper's perturbation 95.12 / 67.64 -> 95.25 / 68.03,
# IS-Net masks 97.31 / 73.90 -> 97.39 / 74.20, low-resolution masks 97.23 / 69.46 -> 97.32 / 69.70,
# blocky masks 96.71 / 66.84 -> 96.80 / 67.05; fewer images below coarse on all four. On 2K cars,
# where it would cost about 60% more time, only +0.07 / +0.13 (carvana-dev), +0.15 / +0.08 (IS-Net 256).
SMALL_MIRROR = True
# On images too small for any coarse stage the final stage runs on the photo enlarged by this factor
# (its ratio is the ladder's last times this; the decoder draws the output at the photo's own size).
# crm eval, 350 DUTS held-out photos each, with the mirror, 1 -> 1.5 (images more than 1 point below
# coarse, IoU / mBA): paper's perturbation 95.25 / 68.03 -> 95.11 / 69.41 (7 / 54 -> 4 / 38), IS-Net
# masks 97.39 / 74.20 -> 97.49 / 74.82 (49 / 131 -> 31 / 98), low-resolution masks 97.32 / 69.70 ->
# 97.55 / 71.30, blocky masks 96.80 / 67.05 -> 97.07 / 68.60. 2 instead of 1.5 lost 0.5 IoU on the
# paper's perturbation; 1.25 gained about half as much.
SMALL_FINAL_SCALE = 1.5
# Photos of up to this many pixels where a coarse stage fits (Full HD, 2K cars) also run the final
# stage enlarged by SMALL_FINAL_SCALE. crm eval, default weights, 96 cars each (48 thin composites):
# carvana-dev 97.30 / 74.24 -> 97.29 / 74.50, IS-Net 256 96.50 / 73.51 -> 96.52 / 73.86, IS-Net 1024
# 92.48 / 74.88 -> 92.48 / 74.92, thin set 90.31 / 78.43 -> 90.32 / 78.70 (fewer images more than
# 1 mBA below coarse on each); 1918x1280 went from 0.61 to 0.87 s per image. Larger photos (4K) keep
# the final stage at ratio 1: the 5 s budget at 4K leaves no room.
ENLARGED_FINAL_MAX_PIXELS = 2_500_000
# ... and up to this many pixels it is also mirrored. Its gain shrinks with the photo while its cost
# grows (carvana-dev enlarged, without -> with the mirror: at 959x640 97.26 / 75.60 -> 97.33 / 76.05
# (mean IoU over images), at 1438x960 96.67 / 74.02 -> 96.71 / 74.17, at 1918x1280 97.29 / 74.50 ->
# 97.33 / 74.64 for 0.87 -> 1.31 s per image).
MIRRORED_FINAL_MAX_PIXELS = 1_000_000
# Photos too small for any coarse stage (a short side under 448 px) are enlarged and mirrored
# whatever the weights' limits say, as measured on DUTS (at most 400x400, 0.16 MP) above; but only
# up to these sizes, beyond which the limits above apply to them too. A line-scan strip can be too
# narrow for a coarse stage and still hold many megapixels: 65535x300 (19.7 MP) ran its final stage
# on 44 MP, twice: 38 s and 2.6 GB peak, beyond the 1.7 GB crm estimates (and checks) for it; at
# ratio 1 unmirrored, 12 s and 1.4 GB. The mirror gained nothing on synthetic strips with blocky
# masks (IoU with / without: 99.23 / 99.25 and 99.07 / 99.07 at 6000x300, 98.10 / 98.13 at
# 8000x200) for twice the time; ratio 1 instead of 1.5 gave 99.06, 99.17 and 98.09.
SMALL_ENLARGED_MAX_PIXELS = ENLARGED_FINAL_MAX_PIXELS
SMALL_MIRRORED_MAX_PIXELS = MIRRORED_FINAL_MAX_PIXELS
# The region pass of a precise mask starts at the coarsest stage that destroys at most this much
# detail; only its thick changes are kept, so it tolerates more than DETAIL_TOLERANCE. IS-Net at
# 1024 px on 1918x1280 cars: 0.03-0.37 at r = 0.25; SAM-like masks of railings and wires: 0.4-1.9.
REGION_DETAIL_TOLERANCE = 0.4
# A region pass's change is kept when a disc of about this many first-stage cells fits inside it.
REGION_CELLS = 2.0
# A region pass's change is kept when less than this share of its outline borders its own coarse
# side (guard.attached_fraction): blobs cut off and holes filled, not bands along the boundary or
# holes punched. IS-Net at 1024 px, 32 cars: the 62 changes below 0.4 gained 73k px (323 px lost);
# the 62 above it lost 1k px net.
REGION_MAX_ATTACHED = 0.4
# A region pass that would change more than this share of the coarse foreground is refused whole: a
# mask judged precise is mostly right, so a change that large says the model is wrong, not the mask.
# Shipped default, largest share taken per set: IS-Net 1024 cars 0.038; a broken weight blend (session
# 17) took 0.21-0.35 on 18 of 24 of those cars, which the gate then kept with the damage in.
REGION_MAX_SHARE = 0.2
# A hole of the mask whose outline lies on the photo's edges (edge alignment along it at least this)
# is most often a real hole, a letter's counter or a gap seen through, and the region pass does not
# fill it. Session 57, every hole the pass filled on IS-Net 1024 and 256, the thin set and its IS-Net
# masks: the rightly filled ones read 0.95-3.93, the wrongly filled ones of over 100 px 6.04-76; the
# counters of white text on a textured photo 6.5-76 (chosen on the same sets it was measured on).
HOLE_EDGE_ALIGNMENT = 5.0
# A region pass starts at this ratio or coarser: a finer first stage sees little more than the final
# one, and its "regions" (2 cells of 2 px) are the size of a railing's bars.
REGION_MAX_RATIO = 0.25
# The region pass ends at its last stage of at most this many pixels (but runs its first stage
# whatever its size). It only has to find regions a disc of several cells fits in, and a photo's
# stage of about 1 MP already shows them: on a 1918x1280 photo the pass ends at 0.5 (1.2 MP); at
# 4K (2.1 MP at 0.5) it ends at 0.25, the same pixels on the object, and saves the 0.6 s its 0.5
# stage cost. 24 IS-Net cars enlarged to 3836x2560: IS-Net 1024 92.13 / 76.67 -> 92.14 / 76.75,
# IS-Net 256 96.95 / 74.43 -> 96.90 / 74.44 (IoU -0.1 to -0.4 on five cars, all still above coarse).
REGION_MAX_PIXELS = 1_600_000


@dataclass(frozen=True)
class FinalStage:
    """How the final stage runs by photo size, and how sure of its changes it must be for them to
    be taken: a property of the weights (``Refiner.final_stage``).

    Photos too small for any coarse stage run it enlarged by ``scale`` and mirrored whatever the
    limits below, up to ``SMALL_ENLARGED_MAX_PIXELS`` and ``SMALL_MIRRORED_MAX_PIXELS`` (longer
    strips follow the limits). Otherwise a photo of at most ``enlarge_max_pixels`` pixels is
    enlarged and one of at most ``mirror_max_pixels`` mirrored. With the guard on, a result whose
    change confidence is below ``min_change_confidence`` keeps the coarse mask, and when the final
    stage refines alone (no coarse stage, no region pass) the trust region lets a far pixel change
    side only where the model is ``final_only_certainty`` sure. The defaults were chosen on the default
    weights; a weights file's sidecar may set its own under ``"final_stage"`` (the EfficientNet-Lite0
    CRM loses about 0.4 mBA on 2K cars when enlarged, so its sidecar sets ``enlarge_max_pixels`` to 0).
    """

    scale: float = SMALL_FINAL_SCALE
    enlarge_max_pixels: int = ENLARGED_FINAL_MAX_PIXELS
    mirror_max_pixels: int = MIRRORED_FINAL_MAX_PIXELS
    min_change_confidence: float = MIN_CHANGE_CONFIDENCE
    final_only_certainty: float = FINAL_ONLY_CERTAINTY

    @classmethod
    def from_hints(cls, hints: Mapping[str, Any] | None) -> FinalStage:
        """The defaults overridden by ``hints`` (a sidecar's ``"final_stage"``); ValueError for an
        unknown key or a value out of range."""
        if not hints:
            return cls()
        if not isinstance(hints, Mapping):
            raise ValueError(f"'final_stage' must be an object, not {type(hints).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(hints) - known)
        if unknown:
            raise ValueError(f"unknown 'final_stage' key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        values = {**cls().__dict__, **hints}
        for name, value in values.items():
            # Python's json reads NaN and Infinity: a sidecar can hold them, and no limit here takes them.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"'final_stage' {name} must be a number >= 0 (finite), not {value!r}")
        if values["scale"] < 1:
            raise ValueError(f"'final_stage' scale must be at least 1, not {values['scale']!r}")
        if values["min_change_confidence"] > 1:
            raise ValueError("'final_stage' min_change_confidence must be at most 1, "
                             f"not {values['min_change_confidence']!r}")
        if not 0.5 <= values["final_only_certainty"] < 1:
            raise ValueError("'final_stage' final_only_certainty must be at least 0.5 and below 1, "
                             f"not {values['final_only_certainty']!r}")
        return cls(float(values["scale"]), int(values["enlarge_max_pixels"]), int(values["mirror_max_pixels"]),
                   float(values["min_change_confidence"]), float(values["final_only_certainty"]))


@dataclass(frozen=True)
class Schedule:
    """The stages chosen for one image and the trust-region distance that goes with them.

    Attributes:
        ratios: the stage ratios to run, increasing.
        guard_px: full-resolution distance from the coarse boundary within which the refiner may
            change the mask freely (unless ``trust`` asks for evidence everywhere).
        trust: 0..1, how precise the coarse boundary looks (edge alignment); the share of the
            trust region's pull applied right at the boundary.
        alignment: the edge alignment measured, if an image was given.
        sharpness: the boundary sharpness, where a coarse stage fits and the alignment reaches
            ``SMALL_TRUST_LOW`` (else None).
        detail: the detail measure per candidate first ratio that was computed (ratio -> loss).
        regions: the coarse stages of a precise mask's region pass (empty: none); its whole-region
            changes go into the mask the final stage refines.
        min_shift: the mean boundary move (px) below which the final stage's moves near the
            boundary are undone (0: never); set only for detailed masks of small images.
        mirror: average the final stage with its run on the mirrored image (``FinalStage``).
        final_only: no coarse stage runs (none was chosen, or none fits the image).
        noise: the std (grey levels, at full size) of the photo's pixel-to-pixel noise
            (:meth:`BoundaryGeometry.noise_level`); None where no image was measured.
    """

    ratios: tuple[float, ...]
    guard_px: float
    trust: float = 0.0
    alignment: float | None = None
    detail: dict[float, float] = field(default_factory=dict)
    regions: tuple[float, ...] = ()
    min_shift: float = 0.0
    mirror: bool = False
    final_only: bool = False
    sharpness: float | None = None
    noise: float | None = None

    def label(self) -> str:
        """The stages as text, e.g. ``"0.5,1"`` or ``"1+regions 0.25,0.5"``."""
        return schedule_text(self.ratios, self.regions)


# A photo whose every channel spans at most this many levels (8-bit) shows nothing to refine against.
FLAT_PHOTO_LEVELS = 3
# photo_is_flat looks at every this-many-th pixel of each row and column first.
FLAT_PHOTO_SAMPLE_STEP = 16


def photo_is_flat(image: np.ndarray) -> bool:
    """Whether an (H, W, 3) uint8 photo is one flat colour (each channel within ``FLAT_PHOTO_LEVELS``):
    a black frame of a fade, a blank page. A sparse sample rules out almost every photo first."""
    sample = image[::FLAT_PHOTO_SAMPLE_STEP, ::FLAT_PHOTO_SAMPLE_STEP].reshape(-1, image.shape[-1])
    if int((sample.max(axis=0).astype(np.int16) - sample.min(axis=0)).max()) > FLAT_PHOTO_LEVELS:
        return False
    for channel in cv2.split(image):  # OpenCV's per-channel extremes: 3x faster than NumPy's over axis 0
        lowest, highest, _, _ = cv2.minMaxLoc(channel)
        if highest - lowest > FLAT_PHOTO_LEVELS:
            return False
    return True


def stage_size(height: int, width: int, ratio: float) -> tuple[int, int]:
    """Stage-input size for a ratio (at least 1 pixel per side)."""
    return max(1, round(height * ratio)), max(1, round(width * ratio))


def stage_pixels(height: int, width: int, ratio: float) -> int:
    """Pixels of the stage input at ``ratio``."""
    stage_height, stage_width = stage_size(height, width, ratio)
    return stage_height * stage_width


def stage_fits(height: int, width: int, ratio: float, min_side: int) -> bool:
    """Whether a stage at ``ratio`` is at least ``min_side`` px on its shorter side (else skipped)."""
    return min(stage_size(height, width, ratio)) >= min_side


def fitting_stages(height: int, width: int, ladder: Sequence[float], min_side: int) -> list[int]:
    """Indices of the ladder's coarse stages (all but the last) that fit the image (:func:`stage_fits`)."""
    return [k for k, ratio in enumerate(ladder[:-1]) if stage_fits(height, width, ratio, min_side)]


def ratios_label(ratios: Sequence[float]) -> str:
    """Comma-separated ratios for logs and JSON, e.g. ``"0.5,1"``."""
    return ",".join(f"{r:g}" for r in ratios)


def schedule_text(ratios: Sequence[float], regions: Sequence[float] = ()) -> str:
    """A schedule for logs and JSON: ``"0.25,0.5,1"``, with ``"+regions 0.25,0.5"`` for a region pass."""
    text = ratios_label(ratios)
    return f"{text}+regions {ratios_label(regions)}" if regions else text


def region_radius(first_ratio: float) -> int:
    """The inscribed radius (px) a region pass's change needs to be kept: a little over REGION_CELLS stage cells."""
    return round(REGION_CELLS / first_ratio) + 1


def guard_distance(first_ratio: float) -> float:
    """Free boundary movement (full-resolution px) for a schedule that starts at ``first_ratio``."""
    return max(MIN_FREE_PX, GUARD_CELLS / first_ratio)


def _alignment_scale(height: int, width: int) -> float:
    """The factor (at most 1) by which the edge alignment reduces a photo: its long side to at most
    ``ALIGNMENT_SIDE``, unless that would take the short side below ``ALIGNMENT_MIN_SHORT_SIDE``
    (elongated photos), and to at most ``ALIGNMENT_MAX_PIXELS``."""
    return min(1.0, max(ALIGNMENT_SIDE / max(height, width), ALIGNMENT_MIN_SHORT_SIDE / min(height, width)),
               (ALIGNMENT_MAX_PIXELS / (height * width)) ** 0.5)


def _alignment_inputs(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The grey image and the binary mask, both reduced by :func:`_alignment_scale`."""
    binary = np.asarray(mask, dtype=bool)  # no copy of a boolean mask
    height, width = binary.shape
    scale = _alignment_scale(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale))) if scale < 1.0 else None

    def reduced_grey() -> np.ndarray:
        grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        return grey if size is None else cv2.resize(grey, size, interpolation=cv2.INTER_AREA)

    grey = memoized(image, ("alignment_grey", size), reduced_grey)
    if size is not None:
        binary = cv2.resize(binary.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.5
    return grey, binary


def _photo_noise(image: np.ndarray, grey: np.ndarray | None = None) -> PhotoNoise:
    """The noise reader of a photo at full size: its whole grey image (``grey``, when the edge alignment
    did not reduce it), else crops of the full-size photo (a reduction by a factor that is not whole
    smooths the noise, which would then read far too low)."""
    def reader() -> PhotoNoise:
        height, width = image.shape[:2]
        if _alignment_scale(height, width) >= 1.0:
            whole = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY) if grey is None else grey
            return PhotoNoise([whole.astype(np.float32)])
        return PhotoNoise(noise_crops(image))

    return memoized(image, "photo_noise", reader)


def _sobel_magnitude(grey: np.ndarray) -> np.ndarray:
    values = grey.astype(np.float32, copy=False)
    return cv2.magnitude(cv2.Sobel(values, cv2.CV_32F, 1, 0), cv2.Sobel(values, cv2.CV_32F, 0, 1))


class BoundaryGeometry:
    """The reduced grey image and each pixel's distance to the mask's other side, computed once and
    shared by :meth:`alignment` and :meth:`sharpness` (one reduction, one distance transform).

    ``above_noise``: both measures subtract the gradient that the photo's pixel-to-pixel noise gives
    (``photo_noise``) from their bands where it is at least ``NOISE_FLOOR_SHARE`` of the outer band's
    mean, so that a mask on a noisy edge reads as on the edge. False measures the gradients as they
    are (``guard.holes_on_edges``' outlines, read on crops of the full-size photo)."""

    def __init__(self, image: np.ndarray, mask: np.ndarray, *, above_noise: bool = True) -> None:
        self.grey, binary = _alignment_inputs(image, mask)
        self.full_size: tuple[int, int] = np.asarray(mask).shape[:2]
        # Full-size pixels per pixel of the grey image (1: not reduced).
        self.reduction = max(self.full_size) / max(self.grey.shape)
        self.above_noise = above_noise
        self._image = image
        # Made when a band's mean or the snap first asks (the residual level: about 10 ms at 2K).
        self._noise: PhotoNoise | None = None
        # None for an empty or full mask: it has no boundary to measure.
        self.distance: np.ndarray | None = None
        if binary.any() and not binary.all():
            inside = binary.astype(np.uint8)
            self.distance = distance_to_other_side(inside)

    def alignment(self) -> float:
        """:func:`edge_alignment`."""
        if self.distance is None:
            return 0.0
        blurred = memoized(self._image, "alignment_magnitude", lambda: _sobel_magnitude(
            cv2.GaussianBlur(self.grey.astype(np.float32), (0, 0), ALIGNMENT_BLUR)))
        distance = self.distance
        return self._band_ratio(blurred, (distance >= 0.5) & (distance <= 2.5), (distance >= 4) & (distance <= 8),
                                ALIGNMENT_BLUR)

    def sharpness(self) -> float:
        """:func:`boundary_sharpness`."""
        if self.distance is None:
            return 0.0
        distance = self.distance
        magnitude = memoized(self._image, "sharpness_magnitude", lambda: _sobel_magnitude(self.grey))
        return self._band_ratio(magnitude, distance <= 1.0, (distance > 1.0) & (distance <= 3.0), 0.0)

    def photo_noise(self) -> PhotoNoise:
        """The photo's noise reader (:func:`_photo_noise`), made once."""
        if self._noise is None:
            self._noise = _photo_noise(self._image, self.grey if self.reduction == 1.0 else None)
        return self._noise

    def noise_floor(self, blur_sigma: float, outer_mean: float) -> float:
        """The mean gradient the photo's white noise gives on the reduced grey image after a blur of
        ``blur_sigma`` px, where it reaches ``NOISE_FLOOR_SHARE`` of ``outer_mean`` (else 0: the bands
        are read as they are)."""
        if not self.above_noise:
            return 0.0
        noise = self.photo_noise()
        # The residual level bounds the white noise's from above, and the unreduced gain over the
        # reduction the reduced gain: most photos stop here, before anything is measured.
        bound = noise_gradient(blur_sigma) / self.reduction * WHITE_NOISE_PER_RESIDUAL * noise.residual
        if bound < NOISE_FLOOR_SHARE * outer_mean:
            return 0.0
        gain = reduced_noise_gradient(blur_sigma, self.full_size, self.grey.shape)
        floor = gain * noise.white
        return floor if floor >= NOISE_FLOOR_SHARE * outer_mean else 0.0

    def noise_level(self) -> float:
        """The std (grey levels) of the photo's pixel-to-pixel noise at full size; 0 below
        ``NOISE_MIN_LEVEL``."""
        return _noise_level(self.photo_noise())

    def _band_ratio(self, magnitude: np.ndarray, near: np.ndarray, outer: np.ndarray, blur_sigma: float) -> float:
        near_values, outer_values = magnitude[near], magnitude[outer]
        if near_values.size == 0 or outer_values.size == 0:
            return 0.0
        floor = self.noise_floor(blur_sigma, float(outer_values.mean()))
        if floor == 0.0:
            return float(near_values.mean() / (outer_values.mean() + 1e-6))
        near_excess = max(0.0, float(near_values.mean()) - floor)
        return near_excess / max(float(outer_values.mean()) - floor, NOISE_MIN_EXCESS * floor)


def _noise_level(noise: PhotoNoise) -> float:
    """``noise``'s white noise where it reaches ``NOISE_MIN_LEVEL``, else 0 (the residual level rules
    out most photos before the half-size read)."""
    if WHITE_NOISE_PER_RESIDUAL * noise.residual < NOISE_MIN_LEVEL:
        return 0.0
    return noise.white if noise.white >= NOISE_MIN_LEVEL else 0.0


def photo_noise_level(image: np.ndarray) -> float:
    """:meth:`BoundaryGeometry.noise_level` of an (H, W, 3) uint8 photo, without a mask."""
    return _noise_level(_photo_noise(image))


def edge_alignment(image: np.ndarray, mask: np.ndarray, *, above_noise: bool = True) -> float:
    """How sharply the image's edges follow the mask's boundary (1 = not at all; 5+ = closely).

    The mean Sobel gradient magnitude of the lightly blurred grey image within 0.5-2.5 px of the
    boundary, over the mean at 4-8 px; ``above_noise``: both less the photo's noise where it is large
    (``BoundaryGeometry``; ``auto`` reads it so only where a coarse stage fits). Large images are
    reduced first (``_alignment_inputs``).
    """
    return BoundaryGeometry(image, mask, above_noise=above_noise).alignment()


def boundary_sharpness(image: np.ndarray, mask: np.ndarray, *, above_noise: bool = True) -> float:
    """Whether the image's edges lie on the mask's boundary or a pixel or two beside it.

    The mean Sobel gradient magnitude of the unblurred grey image on the pixels touching the
    boundary (distance 1 on either side), over the mean 1-3 px from it: 1 for a uniform gradient,
    large for a hard edge right at the boundary, under 1 for an edge a few px off it. ``above_noise``:
    as for :func:`edge_alignment`. Large images are reduced first (``_alignment_inputs``).
    """
    return BoundaryGeometry(image, mask, above_noise=above_noise).sharpness()


def outline_sharpness(image: np.ndarray, labels: np.ndarray, count: int,
                      share: float = OUTLINE_SHARP_SHARE) -> np.ndarray:
    """How exactly the photo's edges follow each labelled piece's outline, all along it: float64
    (count,), 0 for label 0 and for a piece with no outline. ``labels`` is int (H, W), 0 for none and
    pieces 1 to ``count - 1``; ``image`` the (H, W, 3) uint8 photo, read at full size.

    Each pixel touching the outline (distance 1 on either side, as :func:`boundary_sharpness` reads;
    one outside the pieces belongs to the piece beside it) scores the photo's Sobel gradient there over the
    mean gradient of the pixels one to three pixels off the outline within three pixels of it (a 7x7
    window), that mean taken as at least ``OUTLINE_MIN_GRADIENT`` (so a step of a few grey levels on a
    flat photo, such as a rendered gradient's banding, is no edge; on a flat photo a sharp line then needs
    a contrast of about 13 levels to read 3.3). A piece reads the score that ``share`` of its outline pixels
    fall below (the lower one at that rank). A whole outline on the photo's edges reads high; a strip
    with one side on an edge and the other on flat or textured photo reads about 1, half its outline
    being no edge (its mean, as :func:`boundary_sharpness` reads it, can be high). The image's own
    edge is no outline: a strip along it is read on its inner side alone.

    Only the box that holds the pieces and their bands is read."""
    sharpness = np.zeros(count, np.float64)
    pieces = (labels > 0).astype(np.uint8)
    if count < 2 or not pieces.any():
        return sharpness
    height, width = pieces.shape
    x, y, w, h = cv2.boundingRect(pieces)
    rows = slice(max(0, y - 4), min(height, y + h + 4))
    cols = slice(max(0, x - 4), min(width, x + w + 4))
    inside = pieces[rows, cols]
    own = labels[rows, cols]
    magnitude = _sobel_magnitude(cv2.cvtColor(np.ascontiguousarray(image[rows, cols]), cv2.COLOR_RGB2GRAY))
    distance = distance_to_other_side(inside)
    # 255 where 1 < distance <= 3 (OpenCV's 3x3 L2 steps are 0.955 and 1.3693: none lies just above 1).
    outer = cv2.inRange(distance, 1.0 + 1e-4, 3.0)
    window = (7, 7)
    outer_sum = cv2.boxFilter(np.where(outer > 0, magnitude, np.float32(0.0)), -1, window, normalize=False,
                              borderType=cv2.BORDER_CONSTANT)
    outer_count = cv2.boxFilter(outer, cv2.CV_32F, window, normalize=False, borderType=cv2.BORDER_CONSTANT)
    points = cv2.findNonZero(cv2.inRange(distance, 0.0, 1.0))  # (x, y) of the pixels touching the outline
    if points is None:  # the pieces cover the whole box: no outline
        return sharpness
    near_cols, near_rows = points.reshape(-1, 2).T
    owner = _piece_beside(own, near_rows, near_cols)
    mean_off = outer_sum[near_rows, near_cols] / np.maximum(outer_count[near_rows, near_cols] / 255.0, 1.0)
    score = magnitude[near_rows, near_cols] / np.maximum(mean_off, OUTLINE_MIN_GRADIENT)
    order = np.lexsort((score, owner))
    owner, score = owner[order], score[order]
    first = np.searchsorted(owner, np.arange(count), side="left")
    size = np.searchsorted(owner, np.arange(count), side="right") - first
    scored = size > 0
    scored[0] = False
    sharpness[scored] = score[first[scored] + np.floor(share * (size[scored] - 1)).astype(np.intp)]
    return sharpness


def distance_to_other_side(inside: np.ndarray) -> np.ndarray:
    """Each pixel's distance (OpenCV's 3x3 L2, float32 (H, W)) to the nearest pixel of the other side of
    ``inside`` (uint8 (H, W), nonzero inside): the bands of :func:`boundary_sharpness`,
    :func:`edge_alignment` and :func:`outline_sharpness`."""
    distance = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3)
    in_mask = inside > 0
    distance[in_mask] = cv2.distanceTransform(inside, cv2.DIST_L2, 3)[in_mask]
    return distance


def _piece_beside(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The piece of each outline pixel (``rows``, ``cols``) of ``labels`` (int (H, W), 0 outside the
    pieces): its own label inside a piece; outside, the highest label among its four neighbours (an
    outline pixel outside lies at a 3x3 L2 distance of at most 1 from a piece, which is one step along
    a row or a column; the highest where two pieces one pixel apart both are). intp (N,)."""
    own = labels[rows, cols].astype(np.intp)
    beside = np.zeros_like(own)
    last_row, last_col = labels.shape[0] - 1, labels.shape[1] - 1
    for neighbour_rows, neighbour_cols in ((np.maximum(rows - 1, 0), cols), (np.minimum(rows + 1, last_row), cols),
                                           (rows, np.maximum(cols - 1, 0)), (rows, np.minimum(cols + 1, last_col))):
        beside = np.maximum(beside, labels[neighbour_rows, neighbour_cols])
    return np.where(own > 0, own, beside)


def trust_from_alignment(alignment: float, small: bool = False) -> float:
    """0 below ``TRUST_LOW``, 1 above ``TRUST_HIGH``, linear between; ``small`` (no coarse stage
    fits the image) uses ``SMALL_TRUST_LOW`` and ``SMALL_TRUST_HIGH`` instead."""
    low, high = (SMALL_TRUST_LOW, SMALL_TRUST_HIGH) if small else (TRUST_LOW, TRUST_HIGH)
    return float(np.clip((alignment - low) / (high - low), 0.0, 1.0))


def trust_from_detail(detail: float) -> float:
    """The share of an edge-aligned mask's trust that its fine detail earns (``auto``, where a coarse
    stage fits): 0 at ``TRUST_DETAIL_LOW`` or less, 1 at ``TRUST_DETAIL_HIGH`` or more, linear between."""
    return float(np.clip((detail - TRUST_DETAIL_LOW) / (TRUST_DETAIL_HIGH - TRUST_DETAIL_LOW), 0.0, 1.0))


def mask_trust(image: np.ndarray, mask: np.ndarray, ladder: Sequence[float], min_side: int) -> float:
    """The trust region's pull at the boundary of ``mask`` (0..1) from its edge alignment, for the
    fixed presets with the guard on (``auto`` adds the detailed-mask rule and, where a coarse stage
    fits, the detail scaling of :func:`trust_from_detail` in :func:`choose_schedule`)."""
    return trust_and_noise(image, mask, ladder, min_side)[0]


def trust_and_noise(image: np.ndarray, mask: np.ndarray, ladder: Sequence[float], min_side: int) -> tuple[float, float]:
    """:func:`mask_trust` and the photo's :meth:`BoundaryGeometry.noise_level`, from one measurement."""
    height, width = mask.shape
    small = not fitting_stages(height, width, ladder, min_side)
    geometry = BoundaryGeometry(image, mask, above_noise=not small)
    return trust_from_alignment(geometry.alignment(), small), geometry.noise_level()


def edge_map(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a 4-neighbour in the background (inside the image)."""
    m = mask.astype(bool)
    edge = np.zeros_like(m)
    edge[1:, :] |= m[1:, :] & ~m[:-1, :]
    edge[:-1, :] |= m[:-1, :] & ~m[1:, :]
    edge[:, 1:] |= m[:, 1:] & ~m[:, :-1]
    edge[:, :-1] |= m[:, :-1] & ~m[:, 1:]
    return edge


def _boundary_box(edge: np.ndarray, margin: int, origin: tuple[int, int] = (0, 0),
                  shape: tuple[int, ...] | None = None) -> tuple[slice, slice] | None:
    """The bounding box of an edge map grown by ``margin``; None if it is empty. The edge map may be a
    crop whose top left lies at ``origin`` of a map of ``shape``, in whose coordinates the box is given."""
    rows = np.flatnonzero(edge.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(edge.any(axis=0))
    height, width = edge.shape if shape is None else shape[:2]
    top, left = origin
    return (slice(max(0, top + int(rows[0]) - margin), min(height, top + int(rows[-1]) + margin + 1)),
            slice(max(0, left + int(cols[0]) - margin), min(width, left + int(cols[-1]) + margin + 1)))


def detail_loss(mask: np.ndarray, radius: int) -> float:
    """Pixels that an opening and a closing with a (2 radius + 1)^2 square change, per boundary pixel.

    Thin parts (narrower than the square) vanish in the opening, narrow gaps and small holes fill
    in the closing; smooth boundaries change neither. 0 for a mask without boundary.
    """
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if worth_a_box(m.shape):
        held = nonzero_box(m)
        if held is None:
            return 0.0
        # The edge lies in the foreground's box; grown by a pixel, the box's own edge reads as the
        # background around it (or is the image's edge, as on the whole mask).
        held = grown_box(held, 1, m.shape)
        edge = edge_map(m[held])
        origin = (held[0].start, held[1].start)
    else:
        edge = edge_map(m)
        origin = (0, 0)
    perimeter = int(np.count_nonzero(edge))
    box = _boundary_box(edge, 2 * radius + 1, origin, m.shape)
    if radius <= 0 or box is None:
        return 0.0
    crop = m[box]
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    # Replicated borders: an object cut by the image (or crop) edge is not "thin" there.
    opened = cv2.morphologyEx(crop, cv2.MORPH_OPEN, kernel, borderType=cv2.BORDER_REPLICATE)
    closed = cv2.morphologyEx(crop, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REPLICATE)
    changed = np.count_nonzero(opened != crop) + np.count_nonzero(closed != crop)
    return changed / perimeter


def stage_radius(ratio: float) -> int:
    """Half the side (full-resolution px) of the smallest structure a stage at ``ratio`` keeps."""
    return max(1, round(1.0 / ratio))


def choose_schedule(mask: np.ndarray, ladder: Sequence[float], image: np.ndarray | None = None, *,
                    tolerance: float = DETAIL_TOLERANCE, min_side: int = 0,
                    final: FinalStage = FinalStage()) -> Schedule:
    """Pick the stages for one coarse mask: a suffix of ``ladder`` (on an image too small for any coarse
    stage, its last stage only), its last stage enlarged and mirrored by photo size as ``final``
    says, and the trust region with it.

    Args:
        mask: (H, W) binary coarse mask (bool or 0/1).
        ladder: increasing candidate ratios.
        image: (H, W, 3) uint8 RGB; without it the edge alignment is not measured (trust 0).
        tolerance: the most detail (``detail_loss``) a first stage may destroy.
        min_side: candidates whose stage would be shorter than this (px) are not considered as a
            start (the engine skips such stages anyway).
        final: how the final stage runs by photo size (the weights' ``FinalStage``).
    """
    ladder = tuple(float(r) for r in ladder)
    binary = np.asarray(mask).astype(bool)
    height, width = binary.shape
    fitting = fitting_stages(height, width, ladder, min_side)
    geometry = None if image is None else BoundaryGeometry(image, binary, above_noise=bool(fitting))
    alignment = None if geometry is None else geometry.alignment()
    trust = 0.0 if alignment is None else trust_from_alignment(alignment, small=not fitting)
    detail: dict[float, float] = {}
    precise = alignment is not None and alignment >= TRUST_LOW
    # Measured only where a rule reads it (the unblurred gradient costs about 15 ms at 2K).
    sharpness = None
    if geometry is not None and fitting and alignment >= SMALL_TRUST_LOW:
        sharpness = geometry.sharpness()
        precise = precise or sharpness >= SHARP_PRECISE_MIN

    def detail_at(ratio: float) -> float:
        if ratio not in detail:
            detail[ratio] = detail_loss(binary, stage_radius(ratio))
        return detail[ratio]

    if fitting and trust > 0.0:
        # The detail's say fades as the alignment grows: a mask on the image's edges everywhere is
        # trusted whatever its shape (a rectangle, a ball).
        trust *= max(trust_from_detail(detail_at(TRUST_DETAIL_RATIO)), trust)
    if precise and sharpness is not None and sharpness < SHARP_BOUNDARY_MIN and trust < SHARP_BOUNDARY_MAX_TRUST:
        trust = 0.0

    def coarsest_start(limit: float, coarsest: float = 1.0) -> int:
        for k in fitting:
            if ladder[k] <= coarsest and detail_at(ladder[k]) <= limit:
                return k
        return len(ladder) - 1

    start = len(ladder) - 1 if precise else coarsest_start(tolerance)
    # The finest coarse stage that runs; on an image too small for any, the ladder's finest one
    # still measures the mask's detail (thin tubes of a chair in a 300-px photo).
    probe = ladder[fitting[-1]] if fitting else (ladder[-2] if len(ladder) > 1 else None)
    probe_tolerance = tolerance if fitting else SMALL_DETAIL_TOLERANCE
    if alignment is not None and probe is not None and detail_at(probe) > probe_tolerance:
        # Even the finest coarser stage would erase the mask's detail: it holds structure finer than
        # any coarse stage sees (SAM-like masks of railings and wires). Its boundary is kept unless
        # the model is sure, whether or not the image's edges vouch for it.
        trust = max(trust, DETAILED_MASK_TRUST)
    regions: tuple[float, ...] = ()
    if precise:
        region_start = coarsest_start(REGION_DETAIL_TOLERANCE, REGION_MAX_RATIO)
        if region_start < len(ladder) - 1:
            first, *finer = ladder[region_start:-1]
            regions = (first, *(r for r in finer if stage_pixels(height, width, r) <= REGION_MAX_PIXELS))
    min_shift = 0.0
    if not fitting and alignment is not None and probe is not None and detail_at(probe) >= SMALL_KEEP_DETAIL:
        min_shift = SMALL_MIN_SHIFT
    ratios = ladder[start:] if fitting else ladder[-1:]
    pixels = height * width
    if pixels <= final.enlarge_max_pixels or (not fitting and pixels <= SMALL_ENLARGED_MAX_PIXELS):
        ratios = ratios[:-1] + (ratios[-1] * final.scale,)
    mirror = SMALL_MIRROR and (pixels <= final.mirror_max_pixels
                               or (not fitting and pixels <= SMALL_MIRRORED_MAX_PIXELS))
    # Every ratio after a fitting start fits too, so the chosen coarse stages all run.
    return Schedule(ratios, guard_distance(ladder[start]), trust, alignment, detail, regions, min_shift,
                    mirror=mirror, final_only=len(ratios) == 1, sharpness=sharpness,
                    noise=None if geometry is None else geometry.noise_level())
