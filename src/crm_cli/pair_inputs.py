"""The files to pair, for :mod:`pairing` and :mod:`score_pairs`: input folders walked (:func:`walk_folder`), notes on
what the walk skipped or kept apart, and a layout's files keyed by name (:class:`LayoutInputs`)."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import count_noun
from .naming import natural_key


def lies_under(real: str, folder: str | None) -> bool:
    """True when the resolved path ``real`` is the resolved folder ``folder`` or lies below it."""
    return folder is not None and (real == folder or real.startswith(folder.rstrip(os.sep) + os.sep))


@dataclass
class FolderWalk:
    """What :func:`walk_folder` found below a folder."""

    files: list[Path] = field(default_factory=list)  # visible files of the formats asked for, in natural_key order
    inside: list[Path] = field(default_factory=list)  # the same, lying in the excluded folder
    broken: list[Path] = field(default_factory=list)  # visible links whose target is gone
    others: dict[str, int] = field(default_factory=dict)  # other visible files: count by extension
    # Folders not searched (outside the excluded folder): another path to a folder searched already
    # (a linked alias), or a link to the walk's folder or one around it (a loop); each with the real
    # folder it leads to.
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    # Paths not taken because they lead into the walk's ``apart`` folder (a link to a mask file, a
    # folder of masks), each with the real path it leads to.
    apart: list[tuple[Path, str]] = field(default_factory=list)
    # Folders that could not be listed (no permission, an I/O error), each with the reason in words.
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def unreadable_reason(walked: FolderWalk, folder: Path) -> str | None:
    """Why the walk could not list ``folder`` itself (its own folder), or None when it could."""
    return next((reason for path, reason in walked.unreadable if path == folder), None)


def walk_folder(folder: Path, suffixes: Sequence[str], exclude: str | None = None, follow: bool = True,
                skip: Sequence[str] = (), apart: str | None = None, real: str | None = None) -> FolderWalk:
    """The visible files below ``folder`` whose extension (any case) is one of ``suffixes``.

    Hidden files and folders (a name starting with a dot: ``.DS_Store``, AppleDouble ``._x.png``)
    are skipped, and so are the top-level entries named in ``skip``. Linked folders are followed
    (``follow``), each real folder searched once: every folder reached without a link first, then
    the linked ones in name order, round by round, so a folder is found by its own path before any
    link to it. A link to ``folder`` or to a folder around it (a loop, or the whole disk) is never
    followed. Files whose resolved path lies in the resolved folder ``exclude`` are listed apart.
    Nothing whose resolved path lies in the resolved folder ``apart`` is taken (the masks folder
    for the walk of the photos' one, and the reverse), unless ``folder`` lies there itself: the
    files and folders leading there are listed in ``apart``. ``real`` is ``folder`` resolved, where
    the caller has resolved it already.
    One ``os.scandir`` per folder and a path resolved per link and per folder only: 20,000 frames
    are listed in well under a second.
    """
    found = FolderWalk()
    start = real if real is not None else os.path.realpath(folder)
    if lies_under(start, apart):
        apart = None  # the walk's own folder lies there: leaving that out would leave out everything
    visited = {start}  # real paths of the folders searched, or queued to be
    queue: deque[tuple[Path, str, bool]] = deque()  # folders to search: path, real path, in the excluded folder
    links: list[tuple[Path, bool]] = []  # linked folders met, followed once no folder is left in queue

    def visit(directory: Path, real: str, excluded: bool) -> None:
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except FileNotFoundError:  # gone meanwhile: nothing to pair there
            return
        except OSError as exc:
            # What lies in the excluded (output) folder is never paired, and a file system's lost+found
            # (root's, mode 0700, at the top of every ext4 mount) holds no input: neither is missed.
            if not excluded and directory.name != "lost+found":
                found.unreadable.append((directory, exc.strerror or str(exc)))
            return
        for entry in entries:
            name = entry.name
            if name.startswith(".") or (directory == folder and name in skip):
                continue
            path = directory / name
            try:
                is_dir = entry.is_dir(follow_symlinks=follow)
                link = entry.is_symlink()
            except OSError:
                continue
            if is_dir:
                if link:
                    links.append((path, excluded))
                else:
                    below = os.path.join(real, name)
                    if lies_under(below, apart):
                        found.apart.append((path, below))
                    elif below in visited:  # reached through a link before: searched already
                        if not excluded:  # what lies in the excluded folder is no input
                            found.skipped.append((path, below))
                    else:
                        visited.add(below)
                        queue.append((path, below, excluded or lies_under(below, exclude)))
                continue
            suffix = os.path.splitext(name)[1].lower()
            try:
                is_file = entry.is_file()
            except OSError:
                is_file = False
            if not is_file:
                if link and not os.path.exists(path) and suffix in suffixes:
                    found.broken.append(path)
                continue
            if suffix not in suffixes:
                found.others[suffix] = found.others.get(suffix, 0) + 1
                continue
            target = os.path.realpath(path) if link else ""
            if link and lies_under(target, apart):
                found.apart.append((path, target))
                continue
            inside = excluded or (link and lies_under(target, exclude))
            (found.inside if inside else found.files).append(path)

    queue.append((folder, start, lies_under(start, exclude)))
    while queue or links:
        if not queue:  # every folder reachable so far without a link is searched: the links met, in order
            met, links[:] = links[:], []
            for path, excluded in met:
                below = os.path.realpath(path)
                if lies_under(below, apart):
                    found.apart.append((path, below))
                elif below in visited or lies_under(start, below):  # an alias, or a loop back around the walk
                    if not excluded:
                        found.skipped.append((path, below))
                else:
                    visited.add(below)
                    queue.append((path, below, excluded or lies_under(below, exclude)))
            continue
        visit(*queue.popleft())
    found.files.sort(key=natural_key)
    found.inside.sort(key=natural_key)
    found.broken.sort()
    found.apart.sort()
    return found


def skipped_note(*walks: FolderWalk) -> list[str]:
    """The note on the linked folders the walks did not follow (none: no note)."""
    skipped = [item for walk in walks for item in walk.skipped]
    if not skipped:
        return []
    path, real = skipped[0]
    return [f"{count_noun(len(skipped), 'linked folder')} skipped, e.g. {path} -> {real}: each leads to a folder "
            "searched already or to one holding the folder searched (each folder is searched once)"]


def apart_note(walk: FolderWalk, other: Path, given: str, masks: bool = True) -> list[str]:
    """The note on the paths of one folder that lead into the ``other`` one (resolved: ``given``;
    none: no note): into the masks folder for the walk of the photos' one (``masks``), else into
    the photos' folder.

    The other folder itself, met as a folder rather than through a link of the walk's own (``crm
    batch shots --masks shots/mattes``, or ``--masks m`` where ``m -> shots/mattes``), is left out
    without a note: it was named as the other folder."""
    apart = [(path, real) for path, real in walk.apart if real != given or os.path.islink(path)]
    if not apart:
        return []
    path, real = apart[0]
    kind, taken, instead = ("masks", "a mask", "a photo") if masks else ("photos", "a photo", "a mask")
    return [f"{count_noun(len(apart), 'path')} leading into the {kind} folder skipped, e.g. {path} -> {real}: "
            f"what lies in {other} is {taken}, not {instead}"]


def keyed_by_name(files: list[Path], folder: Path, tag: str = "") -> dict[Path, list[Path]]:
    """``{relative/name: files}`` of ``files`` below ``folder`` named ``<name><tag>.<ext>`` (all of
    them when ``tag`` is empty)."""
    found: dict[Path, list[Path]] = {}
    for path in files:
        stem = path.stem
        if tag and not (stem.endswith(tag) and len(stem) > len(tag)):
            continue
        relative = path.relative_to(folder)
        found.setdefault(relative.with_name(stem[: len(stem) - len(tag)]), []).append(path)
    return found


@dataclass
class LayoutInputs:
    """One layout's files before they are paired: photos, masks and ground truths keyed by relative
    name (see :func:`keyed_by_name`), and what the messages of :func:`pairing._pair_inputs` say of the layout."""

    layout: str
    images: dict[Path, list[Path]]
    masks: dict[Path, list[Path]]
    suffixes: tuple[str, ...]  # the mask of <name> is <name><suffix> for one of them (see pairing._match)
    images_inside: dict[Path, list[Path]] = field(default_factory=dict)  # photos in the excluded folder
    masks_inside: dict[Path, list[Path]] = field(default_factory=dict)  # masks in the excluded folder
    gts: dict[Path, list[Path]] = field(default_factory=dict)  # ground truths (BIG layout)
    broken: list[Path] = field(default_factory=list)  # links to missing files
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # folders that could not be listed, why
    notes: list[str] = field(default_factory=list)
    masks_dir: Path | None = None  # the masks' own folder (folder layouts): named where a photo's mask is missing
    # Side by side, a guess: the folder searched, for pairing._pair_inputs' NoPairsError when not one photo
    # fits a mask (then the folder holds another layout), and the command its hints name (pairing.scan_pairs'
    # ``command``).
    guessed_in: Path | None = None
    command: str = "crm batch"
