"""``crm coco ANNOTATIONS.json --images DIR -o REFINED.json``: refine COCO instance masks, resumably."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from .checks import DESCRIPTOR, special_file, unwritable_reason
from .failures import user_errors
from .options import (
    JsonOpt,
    PhotoBits,
    PhotoBitsOpt,
    QuietOpt,
    RefinerOptions,
    finite_option,
    list_items,
    photo_bits_value,
    refiner_options,
    refuse_standard_output,
    require_existing,
)
from .output import FailureRecord, console, finish_run, report_failure, say, usage_errors_recorded, warn
from .resumable import RayOpt, checked_ray_spec, weights_identity
from .stops import clear_leftover_temp_files

MAX_LISTED_FAILURES = 20  # failures listed on stderr (all of them are in --json)


def parse_ids(value: str | None) -> set[int] | None:
    """``"1,3"`` -> {1, 3}; a usage error for an empty item (presets.split_items) or a non-integer."""
    if value is None:
        return None
    items = list_items(value, "--category-ids", "category ids")
    try:
        return {int(item) for item in items}
    except ValueError:
        raise typer.BadParameter(f"category ids must be comma-separated integers, got {value!r}",
                                 param_hint="'--category-ids'") from None


class UnknownCategoriesError(ValueError):
    """``--category-ids`` names no category of the annotation file: nothing could be refined, a
    usage error (exit 2; ``cli.failures.user_errors`` reads ``exit_code``)."""

    exit_code = 2


def check_categories(data: dict[str, Any], wanted: set[int], annotations: Path) -> None:
    """Warn about ``--category-ids`` that neither the file's ``categories`` nor its annotations'
    ``category_id`` values hold; UnknownCategoriesError when none of them is held."""
    from ..coco.files import is_json_id
    from ..pairing_hints import listed
    from ..pipeline import ids_text

    categories = partial(ids_text, one="category", many="categories")  # worded as --labels words its ids

    # The annotations decide what can be refined; the categories list only adds names.
    named: dict[Any, Any] = {entry["category_id"]: None for entry in data["annotations"]
                             if isinstance(entry, dict) and is_json_id(entry.get("category_id"))}
    if isinstance(data.get("categories"), list):
        named.update({entry["id"]: entry.get("name") for entry in data["categories"]
                      if isinstance(entry, dict) and is_json_id(entry.get("id"))})
    missing = sorted(wanted.difference(named))
    if not missing:
        return
    if len(missing) == len(wanted):
        known = [f"{key} ({name})" if name is not None else str(key) for key, name in named.items()]
        what = f"{categories(missing)} is not" if len(missing) == 1 else f"none of {categories(missing)} is"
        raise UnknownCategoriesError(f"--category-ids: {what} in {annotations} (its categories: "
                                     f"{listed(known) or 'none'}); nothing to refine")
    verb = "is" if len(missing) == 1 else "are"
    warn(f"--category-ids: {categories(missing)} {verb} not in {annotations}; refining "
         f"{categories(sorted(wanted.intersection(named)))} only")


def special_output(output: Path) -> str | None:
    """What ``output`` is when it is no file for a COCO result: "standard output" or "standard error"
    (/dev/stdout while it is redirected to a file), a kind of :func:`checks.special_file` ("a pipe,
    not a regular file", "a character device, not a regular file" for /dev/null, "a file descriptor");
    None otherwise. The result is resumed through a progress file beside it (``OUT.partial.jsonl``),
    which has no place next to a device or a descriptor, and stdout is for ``--json``."""
    import os

    try:
        stat = os.stat(output)
    except OSError:
        return None  # nothing there yet (or nothing readable): the checks of the write name it
    if (kind := special_file(output)) is not None and kind != DESCRIPTOR:
        return f"{kind}, not a regular file"
    for name, stream in (("standard output", 1), ("standard error", 2)):
        try:
            other = os.fstat(stream)
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (stat.st_dev, stat.st_ino):
            return name
    return kind


@refiner_options(guard=False, resumable=True)
def coco(
    annotations: Annotated[Path, typer.Argument(
        metavar="ANNOTATIONS.json", help="COCO instances file (polygons or RLE).")],
    images: Annotated[Path, typer.Option(
        "--images", "-i", metavar="DIR",
        help="Folder the images' file_name entries are relative to.")],
    output: Annotated[Path, typer.Option(
        "--output", "-o", dir_okay=False, metavar="FILE", help="Refined COCO file (written atomically).")],
    category_ids: Annotated[str | None, typer.Option(
        "--category-ids", metavar="IDS",
        help="Refine only instances of these categories, e.g. 1,3; the rest stay as they are.")]
    = None,
    min_area: Annotated[float, typer.Option(
        "--min-area", min=0.0, callback=finite_option, metavar="PIXELS",
        help="Leave instances with fewer mask pixels than this as they are.")] = 0.0,
    margin: Annotated[int, typer.Option(
        "--margin", min=0, metavar="PX", rich_help_panel="Quality",
        help="Context around each instance's box in pixels, at least (also at least a quarter of the box's "
             "longer side).")] = 32,
    full_image: Annotated[bool, typer.Option(
        "--full-image", rich_help_panel="Quality",
        help="Refine each instance on the whole image instead of a crop around it (slow; for comparisons).")]
    = False,
    photo_bits: PhotoBitsOpt = PhotoBits.auto,
    options: RefinerOptions = RefinerOptions(),
    ray_address: RayOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Refine every instance mask of a COCO file at the images' full resolution.

    Each instance is refined in a crop around its box and written as compressed RLE with its area and bbox updated;
    every other field is kept as it was, and crowd regions are left untouched.

    Progress goes to OUTPUT.partial.jsonl as instances finish, so an interrupted run continues where it stopped.
    A bad instance is reported and skipped; the exit code is 1 if any failed.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..coco import (
        RefineOptions,
        Sidecar,
        apply_results,
        iter_image_job,
        load_coco_hashed,
        plan_jobs,
        refine_image_job,
        sidecar_path,
    )
    from ..coco import write_json_atomic as write_output
    from ..raybatch import RayRunError, ray_run

    started = time.perf_counter()
    fatal = FailureRecord(json_out, lambda failure: {**failure, "output": str(output)})
    # With --json, crm's own usage errors print this record too, as runtime failures do.
    with usage_errors_recorded(fatal):
        require_existing(annotations, "'ANNOTATIONS.json'", folder=False)
        require_existing(images, "'--images' / '-i'")
        refuse_standard_output(output, "crm coco writes a file (its progress file goes beside it, for resuming), "
                               "not standard output", "'--output'", kind="file")
        ray_spec = checked_ray_spec(options, ray_address)
        wanted = parse_ids(category_ids)
        if output.resolve() == annotations.resolve():
            raise typer.BadParameter("the output file must differ from the annotation file", param_hint="'--output'")
        settings = options.settings()
        if (special := special_output(output)) is not None:
            raise typer.BadParameter(f"{output} is {special}; name a file to write", param_hint="'--output'")
    instance_options = RefineOptions(preset=settings, min_area=min_area, min_margin=margin,
                                     full_image=full_image, photo_bits=photo_bits_value(photo_bits))
    # Checked before anything is read or loaded: a path under a file gives one clear line.
    if (reason := unwritable_reason(output)) is not None:
        raise fatal.fail(reason)
    clear_leftover_temp_files([output, sidecar_path(output)], quiet)  # what killed runs' writes of them left
    with user_errors(fatal.emit):
        data, input_sha256 = load_coco_hashed(annotations)
        if wanted:
            check_categories(data, wanted, annotations)
        weights = str(options.weights) if options.weights else None
        fingerprint = {"input_sha256": input_sha256, "weights": weights, **instance_options.fingerprint(),
                       "images": str(images.resolve())}
        # Which weights a path or the default names changes (a file replaced, a new version's default):
        # a run resumed across such a change would mix two models' masks.
        fingerprint["default_weights" if weights is None else "weights_identity"] = weights_identity(options.weights)
        sidecar = Sidecar(output, fingerprint, later_keys=("images", "weights_identity"))
        recorded, note = sidecar.load()
        if note:  # a warning, not a log line: -q keeps it (earlier progress is being thrown away)
            warn(note)
        plan = plan_jobs(data, images, wanted, recorded)
        # Instances of categories this run leaves out stay recorded for a later run of theirs.
        done = {index: record for index, record in recorded.items() if index in plan.resumed}
        if not quiet and done:
            say(f"resuming: {len(done)} instance(s) already refined ({sidecar.path})")
        sidecar.open(recorded)

    results: dict[int, dict[str, Any]] = dict(done)
    failures: list[dict[str, Any]] = list(plan.failed)
    # Errors are not progress: instances that cannot even start are named now, even with -q.
    for result in plan.failed:
        report_failure(_instance_label(result), result["error"])
    skipped = dict(plan.skipped)
    refined_now = 0
    # (job index, {"results": the image's instance results}) from either executor: locally each
    # instance's result comes as soon as it is refined (and is recorded for resuming), on Ray each
    # image's at once. A Ray run starts when its `with` is entered below.
    run: AbstractContextManager[Iterator[tuple[int, dict[str, Any]]]] = nullcontext(iter(()))
    sidecar_error: OSError | None = None
    if plan.jobs and ray_address is not None:
        work = partial(refine_image_job, options=instance_options)
        run = ray_run(ray_address, plan.jobs, work, ray_spec, quiet=quiet, log=None if quiet else say)
    elif plan.jobs:
        with user_errors(fatal.emit):
            refiner = options.load(quiet)
        run = nullcontext((index, {"results": iter_image_job(refiner, job, instance_options)})
                          for index, job in enumerate(plan.jobs))
    # What stops the whole run here (running out of memory outside any one instance or image, while
    # the results are applied) reads as crm refine's error, after the progress bar is taken down.
    with user_errors(fatal.emit), Progress(TextColumn("refine"), BarColumn(), MofNCompleteColumn(),
                                           TimeElapsedColumn(), TextColumn("{task.fields[current]}", markup=False),
                                           console=console, disable=quiet) as progress:
        task = progress.add_task("coco", total=plan.instances, current="")
        try:
            with run as images:  # on Ray, stdout is stderr until the block is left (also by the break)
                stream = ((index, result) for index, image in images for result in image["results"])
                for index, result in stream:
                    for note in result.pop("notes", ()):  # a warning, as in crm refine: -q keeps it
                        warn(note, progress.console)
                    status = result["status"]
                    if status == "refined":
                        try:
                            sidecar.append(result)
                        except OSError as exc:  # a full disk: stop, keeping what was recorded
                            sidecar_error = exc
                            break
                        results[result["index"]] = result
                        refined_now += 1
                    elif status == "failed":
                        failures.append({**result, "file_name": plan.jobs[index]["name"]})
                        report_failure(_instance_label(failures[-1]), result["error"], progress.console)
                    else:
                        skipped[result["reason"]] = skipped.get(result["reason"], 0) + 1
                    progress.update(task, advance=1, current=plan.jobs[index]["name"])
        except RayRunError as exc:
            if exc.exit_code == 2 and not recorded:
                sidecar.remove()  # a usage error (an address Ray cannot read) leaves no progress file behind
            else:
                sidecar.close()
            raise fatal.fail(str(exc), exc.exit_code) from None
        except BaseException:
            sidecar.close()  # what finished stays recorded for the next run
            raise
    if sidecar_error is not None:
        from ..writing import write_error_reason

        try:
            sidecar.close()
        except OSError:
            pass  # the same failure again; the line below names it
        raise fatal.fail(f"cannot write {sidecar.path}: {write_error_reason(sidecar.path, sidecar_error)}; "
                         "the instances recorded before it are kept for the next run")

    with user_errors(fatal.emit):
        apply_results(data, results.values())
        nulls = write_output(output, data)
    if nulls:  # strict JSON has no such numbers; Python's json writes them, other parsers refuse them
        warn(f"{annotations}: {nulls} NaN or Infinity value(s) written as null in {output} (JSON has no such numbers)")
    if failures:
        sidecar.close()  # kept: a rerun retries only the failed instances
    else:
        sidecar.remove()
    seconds = round(time.perf_counter() - started, 3)
    failures.sort(key=lambda result: result["index"])
    if not quiet:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))
        say(f"coco: {refined_now} refined, {len(done)} resumed, {sum(skipped.values())} skipped"
            f"{f' ({reasons})' if reasons else ''}, {len(failures)} failed in {seconds:.1f} s -> {output}")
        for result in failures[:MAX_LISTED_FAILURES]:
            report_failure(_instance_label(result), result["error"], prefix="  failed")
        if len(failures) > MAX_LISTED_FAILURES:
            console.print(f"  ... and {len(failures) - MAX_LISTED_FAILURES} more (see --json)", highlight=False)
    finish_run({"refined": refined_now, "resumed": len(done), "skipped": sum(skipped.values()),
                "skipped_by_reason": skipped, "failed": len(failures), "seconds": seconds, "output": str(output),
                "failures": [{"index": r["index"], "id": r["id"], "error": r["error"],
                              **({"file_name": r["file_name"]} if "file_name" in r else {})} for r in failures]},
               failed=bool(failures), json_out=json_out)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("coco", short_help="Refine the instance masks of a COCO annotation file.")(coco)


def _instance_label(result: dict[str, Any]) -> str:
    """The head of a failed instance's line: its id, its index in ``annotations`` (from 0) and, when
    its image is known and the error does not name it already, the image's ``file_name``."""
    where = f"annotation #{result['index']}"
    name = result.get("file_name")
    if name is not None and str(name) not in str(result["error"]):
        where += f", {name}"
    return f"instance {result['id']} ({where}): "
