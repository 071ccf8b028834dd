"""The torch-free CPU stage runner: the encoder in ONNX Runtime, the implicit decoder in NumPy.

``OnnxStageRunner`` runs single stages exactly as ``stages.StageRunner`` does (same padding,
tiles, ROI band and decoder geometry; outputs agree to float rounding, checked in the tests), on
NumPy arrays instead of tensors. A process that refines through it never imports torch, which
costs 1.3-2.6 s of a 4K ``crm refine`` on a 2-core CPU. The encoder graph is made by
``onnx_export`` and ships beside the weights; the decoder's weights are read from the checkpoint
itself, so both halves come from the same file (its sidecar ties the ONNX file's sha256 to it).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import WeightsError
from .config import ArchConfig
from .errors import count_noun, first_line
from .photo_memo import memoized
from .resampling import pad_stage_input, resize_probability, stage_photo
from .roi import band_to_stage_array, roi_band_array
from .runtime import available_cpus, quota_limited_threads, usable_threads
from .schedule import stage_size
from .stage_geometry import STAGE_PAD, StageTiming, TiledRunner, encode_windows, occupied_tiles, tile_windows

# ONNX Runtime's run option that makes the CPU arena free the regions no tensor uses when the run
# ends (OnnxStageRunner.release_memory), and its value for the CPU's arena.
ARENA_SHRINK_OPTION = "memory.enable_memory_arena_shrinkage"
ARENA_SHRINK_CPU = "cpu:0"

# Decoder rows per call. Each of its (n, hidden) float32 arrays (512 KB at hidden 32) then stays in
# a core's L2 cache: 16k-point calls were 1.5-1.8x slower on a 512 KB-L2 CPU.
POINT_CHUNK = 4096


class _BlasHold:
    """Holds NumPy's BLAS to one thread while any decode runs, whichever thread runs it.

    The BLAS thread count is one setting for the whole process: two Refiners decoding side by side
    (one per thread, as README suggests) each saving and restoring it left it at 1 for good, the
    second saving the first's 1. Here the first decode to start saves it, the last to end puts it
    back, and the ones between share the hold.

    threadpoolctl 3.8 lets only one thread at a time change OpenBLAS's count (its "controlling
    thread", otherwise the call does nothing); the first and the last holder may be different
    threads, so the hold hands that role over (``_any_thread_may_set``) around each change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._controller: Any = None  # threadpoolctl's, made on first use (it lists the loaded libraries)
        self._limiter: Any = None  # while held: what puts the counts back

    @contextmanager
    def one_thread(self) -> Iterator[None]:
        """Inside, BLAS runs on one thread (for every thread of the process)."""
        with self._lock:
            if self._holders == 0:
                from threadpoolctl import ThreadpoolController

                if self._controller is None:
                    self._controller = ThreadpoolController()
                _any_thread_may_set()
                self._limiter = self._controller.limit(limits=1, user_api="blas")
                _any_thread_may_set()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    _any_thread_may_set()
                    self._limiter.restore_original_limits()
                    self._limiter = None
                    _any_thread_may_set()


def _any_thread_may_set() -> None:
    """Let the next thread that sets OpenBLAS's thread count do so (threadpoolctl 3.8 and later
    ignore a thread other than the one that set it last, until that one lets go)."""
    import threadpoolctl

    clear = getattr(getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


BLAS_HOLD = _BlasHold()


class DecoderPool:
    """Runs independent decoder chunks on ``workers`` threads, with BLAS held to one thread each.

    NumPy's gathers, adds and small matrix products release the GIL, so threads share the chunks.
    Left alone, OpenBLAS would split each small product over every core on top of the pool; with
    one BLAS thread per chunk the pool alone decides how many cores are busy (``--threads``), and a
    600k-point decode at 4K took 0.6 s instead of 1.4-1.9 s on 2 cores.
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or available_cpus())
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="crm-decode") if self.workers > 1 else None

    def run(self, job: Callable[[int], None], starts: Sequence[int]) -> None:
        """``job(start)`` for every start, each writing its own slice of an output."""
        with BLAS_HOLD.one_thread():
            if self._executor is None or len(starts) < 2:
                run_jobs(None, job, starts)
                return
            try:
                results = self._executor.map(job, starts)  # starts the pool's threads on first use
            except RuntimeError:
                # No thread to be had (a container's pids limit): the chunks run here, now and later.
                self.close()
                self._executor = None
                run_jobs(None, job, starts)
                return
            for _ in results:  # re-raises a job's exception here
                pass

    def close(self) -> None:
        """Stop the worker threads."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)


def run_jobs(pool: DecoderPool | None, job: Callable[[int], None], starts: Sequence[int]) -> None:
    """``job(start)`` for every start: on ``pool``, or on the calling thread when it is None."""
    if pool is None:
        for start in starts:
            job(start)
    else:
        pool.run(job, starts)


@dataclass
class AxisTable:
    """Per-axis lookup for one stage (NumPy twin of ``model.decoder.AxisTable``).

    Shapes: ``index`` (2, n) int64, ``weight`` (2, n) float32, ``term`` (2, n, hidden) float32.
    """

    index: np.ndarray
    weight: np.ndarray
    term: np.ndarray


def axis_geometry(n_target: int, n_stage: int, n_latent: int, pad: int) -> tuple[np.ndarray, ...]:
    """Support cells, relative coordinates, blend weights and target coords along one axis, computed
    in float64 like ``model.decoder.axis_geometry`` (see its module for the geometry)."""
    i = np.arange(n_target, dtype=np.float64)
    q = ((i + 0.5) * (n_stage / n_target) + pad) / 2.0 - 0.5
    base = np.floor(q)
    index = np.clip(np.stack([base, base + 1]), 0, n_latent - 1)
    rel = 2.0 * (q[None] - index)
    magnitude = np.abs(rel)
    total = np.maximum(magnitude.sum(0), 1e-12)
    weight = np.stack([magnitude[1], magnitude[0]]) / total
    weight[:, index[0] == index[1]] = 0.5  # both supports clamped onto one cell: split evenly
    coord = -1.0 + (2.0 * i + 1.0) / n_target
    return index.astype(np.int64), rel.astype(np.float32), weight.astype(np.float32), coord.astype(np.float32)


class NumpyDecoder:
    """The implicit decoder's MLP with the split first layer (``model.decoder.ImplicitDecoder``), in NumPy.

    ``layers``: (weight (out, in), bias (out,)) per Linear layer, float32, as the checkpoint stores them.
    """

    def __init__(self, layers: Sequence[tuple[np.ndarray, np.ndarray]], latent_dim: int) -> None:
        self.latent_dim = latent_dim
        self.first_weight, self.first_bias = layers[0]
        self.hidden_dim = self.first_weight.shape[0]
        # Transposed once: x @ W.T as a contiguous (in, out) matrix.
        self.tail_layers = [(np.ascontiguousarray(w.T), b) for w, b in layers[1:]]

    @classmethod
    def from_checkpoint(cls, weights: Path, config: ArchConfig) -> NumpyDecoder:
        """The decoder layers of a .safetensors checkpoint, read without torch; a one-line
        WeightsError when they are not there as ``config`` describes them."""
        from safetensors import safe_open

        layers = []
        try:
            with safe_open(str(weights), framework="np") as handle:
                for k in range(config.hidden_layers + 1):
                    weight = handle.get_tensor(f"decoder.layers.{k}.weight").astype(np.float32)
                    bias = handle.get_tensor(f"decoder.layers.{k}.bias").astype(np.float32)
                    layers.append((weight, bias))
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise WeightsError(f"{weights}: the decoder's weights do not fit their recorded architecture "
                               f"({exc})") from None
        return cls(layers, config.latent_dim)

    def axis_table(self, n_target: int, n_stage: int, n_latent: int, pad: int, axis: int) -> AxisTable:
        """Lookup table for one axis (0 = rows, 1 = columns) of one stage."""
        index, rel, weight, coord = axis_geometry(n_target, n_stage, n_latent, pad)
        c = self.latent_dim
        w_rel, w_coord, w_cell = (self.first_weight[:, c + offset + axis] for offset in (0, 2, 4))
        term = rel[..., None] * w_rel + coord[None, :, None] * w_coord + np.float32(n_stage / n_target) * w_cell
        if axis == 0:
            term = term + self.first_bias
        return AxisTable(index, weight, term)

    def tail(self, pre: np.ndarray) -> np.ndarray:
        """Layers 2..L on first-layer pre-activations (..., hidden) -> (...); ``pre`` is overwritten."""
        x = np.maximum(pre, 0, out=pre)
        for weight, bias in self.tail_layers[:-1]:
            x = x @ weight
            x += bias
            np.maximum(x, 0, out=x)
        weight, bias = self.tail_layers[-1]
        return (x @ weight)[..., 0] + bias[0]

    def decode_points(self, g: np.ndarray, rows: AxisTable, cols: AxisTable, ys: np.ndarray,
                      xs: np.ndarray) -> np.ndarray:
        """Logits at scattered target pixels ``(ys[n], xs[n])`` of a (h, w, hidden) latent: (n,)."""
        width = g.shape[1]
        flat = g.reshape(-1, g.shape[2])
        # ndarray.take, not fancy indexing: the same gathers, 20-35% faster on 16k-point chunks.
        col_cells = [cols.index[b].take(xs) for b in range(2)]
        col_terms = [cols.term[b].take(xs, axis=0) for b in range(2)]
        col_weights = [cols.weight[b].take(xs) for b in range(2)]
        out = None
        for a in range(2):
            row_cells = rows.index[a].take(ys) * width
            row_term, row_weight = rows.term[a].take(ys, axis=0), rows.weight[a].take(ys)
            for b in range(2):
                pre = flat.take(row_cells + col_cells[b], axis=0)
                pre += row_term
                pre += col_terms[b]
                contrib = self.tail(pre) * (row_weight * col_weights[b])
                out = contrib if out is None else out + contrib
        assert out is not None
        return out

    def decode_scattered(self, g: np.ndarray, rows: AxisTable, cols: AxisTable, ys: np.ndarray, xs: np.ndarray,
                         pool: DecoderPool | None = None, chunk: int = POINT_CHUNK) -> np.ndarray:
        """:meth:`decode_points` over any number of points, in ``chunk``-point calls run on ``pool``
        (None: on the calling thread)."""
        out = np.empty(ys.shape[0], np.float32)

        def job(start: int) -> None:
            stop = start + chunk
            out[start:stop] = self.decode_points(g, rows, cols, ys[start:stop], xs[start:stop])

        run_jobs(pool, job, range(0, ys.shape[0], chunk))
        return out

    def decode_band(self, g: np.ndarray, rows: AxisTable, cols: AxisTable, r0: int, r1: int) -> np.ndarray:
        """Dense logits (r1 - r0, W) for target rows r0..r1."""
        total = None
        for a in range(2):
            g_rows = g.take(rows.index[a, r0:r1], axis=0)  # (nb, w, k)
            row_term = rows.term[a, r0:r1][:, None]
            row_weight = rows.weight[a, r0:r1][:, None]
            for b in range(2):
                pre = g_rows.take(cols.index[b], axis=1)
                pre += row_term
                pre += cols.term[b]
                contrib = self.tail(pre) * (row_weight * cols.weight[b])
                total = contrib if total is None else total + contrib
        assert total is not None
        return total

    def decode(self, g: np.ndarray, target_hw: tuple[int, int], stage_hw: tuple[int, int], pad: int,
               pool: DecoderPool | None = None, chunk: int = POINT_CHUNK) -> np.ndarray:
        """Dense logits (H, W) on the target grid from a (h, w, hidden) latent, in row bands of
        about ``chunk`` pixels (at least one row) run on ``pool``."""
        height, width = target_hw
        rows = self.axis_table(height, stage_hw[0], g.shape[0], pad, axis=0)
        cols = self.axis_table(width, stage_hw[1], g.shape[1], pad, axis=1)
        band = max(1, chunk // max(width, 1))
        out = np.empty(target_hw, np.float32)

        def job(r0: int) -> None:
            r1 = min(height, r0 + band)
            out[r0:r1] = self.decode_band(g, rows, cols, r0, r1)

        run_jobs(pool, job, range(0, height, band))
        return out


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 logistic function, without overflow warnings for large negative logits."""
    return (0.5 * (np.tanh(0.5 * logits) + 1.0)).astype(np.float32, copy=False)


def padded_stage_rgb(image: np.ndarray, stage_hw: tuple[int, int]) -> np.ndarray:
    """The (H, W, 3) uint8 photo at a stage's (height, width) (``resampling.stage_photo``), padded as
    a stage input (``resampling.pad_stage_input``)."""
    return pad_stage_input(np.ascontiguousarray(stage_photo(image, stage_hw)))


class ArrayStageInput:
    """A padded stage input held as uint8 RGB plus the float mask (NumPy twin of ``stages.StageInput``)."""

    def __init__(self, rgb: np.ndarray, mask: np.ndarray, input_norm: tuple[Sequence[float], Sequence[float]]) -> None:
        """``rgb``: the photo already padded (:func:`padded_stage_rgb`, which a label map's ids share);
        ``mask`` at the stage's size, padded here."""
        self.rgb = rgb
        self.mask = pad_stage_input(mask)
        self.mean = np.asarray(input_norm[0], np.float32)
        self.std = np.asarray(input_norm[1], np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        """Padded (height, width)."""
        return self.rgb.shape[:2]

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The (1, 4, y1 - y0, x1 - x0) network input for a window of the padded stage."""
        rgb = self.rgb[y0:y1, x0:x1].astype(np.float32)
        rgb /= np.float32(255.0)
        out = np.empty((1, 4, y1 - y0, x1 - x0), np.float32)
        for c in range(3):
            out[0, c] = (rgb[..., c] - self.mean[c]) / self.std[c]
        out[0, 3] = self.mask[y0:y1, x0:x1] * np.float32(2.0) - np.float32(1.0)
        return out


def open_encoder_session(encoder_path: str | Path, threads: int | None, data: bytes | None = None) -> Any:
    """An ONNX Runtime CPU session of an exported encoder (``onnxruntime.InferenceSession``).

    Args:
        encoder_path: the ``.onnx`` file.
        threads: intra-op threads (None or 0: ONNX Runtime's default, the physical cores); the
            caller bounds them (``runtime.usable_threads``).
        data: the file's bytes as the caller read (and checked) them, which the session is built
            from; None: ONNX Runtime reads the file.

    Raises:
        checkpoint.WeightsError: ONNX Runtime cannot load the file (one line naming it).
        MemoryError: as raised, untouched.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default, the physical cores
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: the log goes to stderr
    # Idle pool threads must not spin: NumPy's decoder runs right after each encoder call on the
    # same cores (spinning doubled the 4K decoder's time), and concurrent crm processes share cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The CPU memory arena stays on (OnnxStageRunner.release_memory empties it when asked): without
    # it, refinements on 2 threads took 1.4-1.5x as long at 1024x768 and 1.2-1.25x at 3840x2160
    # (medians, alternated in one process), and so did shrinking the arena after every run.
    try:
        source = str(encoder_path) if data is None else data
        # Without enable_fallback=0, a session that fails to start (a pids limit) is retried on the same
        # CPU provider after a banner that ONNX Runtime's Python layer prints to stdout, which carries
        # crm's data (-o -, --json).
        return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"], enable_fallback=0)
    except MemoryError:
        raise  # the machine's state, not the file's: the CLI's out-of-memory advice applies
    except Exception as exc:  # ONNX Runtime's own exception types (InvalidProtobuf, Fail, ...), not OSError
        if "pthread_create failed" in str(exc):  # its thread pool, not the file: errors.thread_shortage_message
            raise RuntimeError(first_line(exc)) from None
        raise WeightsError(f"{encoder_path}: ONNX Runtime cannot load the exported encoder ({first_line(exc)}); "
                           "export it again (python -m crm_cli.onnx_export), or use the torch backend") from None


def arena_shrink_options() -> Any:
    """ONNX Runtime run options under which the CPU arena frees its unused regions when the run ends."""
    import onnxruntime

    options = onnxruntime.RunOptions()
    options.add_run_config_entry(ARENA_SHRINK_OPTION, ARENA_SHRINK_CPU)
    return options


class OnnxStageRunner(TiledRunner):
    """Runs single stages on the CPU with an ONNX encoder and the NumPy decoder (no torch).

    The tile options mean what they mean for ``stages.StageRunner``, except ``decode_budget_mb``:
    the NumPy decoder works in cache-sized chunks (``POINT_CHUNK``) on ``threads`` threads instead.

    ONNX Runtime keeps the memory of every encoding in its CPU arena for the next one, where
    glibc's ``malloc_trim`` cannot reach it: 30 refinements of 200-1000 px photos held about 240
    MB there. :meth:`release_memory` empties it; the arena itself stays on (see
    :func:`open_encoder_session`).
    """

    backend = "onnx"

    def __init__(self, encoder_path: Path, decoder: NumpyDecoder, config: ArchConfig, *, threads: int | None = None,
                 encoder_data: bytes | None = None, encoder_sha256: str | None = None, **tiles: int) -> None:
        """``encoder_data``: the encoder file's bytes as the caller read and verified them
        (``checkpoint.verify_encoder``; None: read here). The session is built from them and a
        pickled or copied runner reopens the file only when it still has their sha256.
        ``encoder_sha256``: the hex sha256 of ``encoder_data`` as the caller computed it (None: hashed
        here); ignored when ``encoder_data`` is None, since the bytes read here are hashed."""
        super().__init__(**tiles)

        threads = usable_threads(threads) if threads else None
        # Absolute: a copy unpickled in a worker with another working directory opens the same file.
        self.encoder_path = Path(encoder_path).absolute()
        data = self.encoder_path.read_bytes() if encoder_data is None else encoder_data
        given = encoder_sha256 if encoder_data is not None else None
        self.encoder_sha256 = given or hashlib.sha256(data).hexdigest()
        self._start(threads, data)
        self.decoder = decoder
        self.input_norm = config.input_norm

    # Pickling carries the encoder's path and sha256, not its bytes (the torch runner carries its
    # model's weights): a Refiner goes into every task of a process pool, joblib or Dask, and
    # the workers read the same file; the copy opens it only if it still has the hash the original
    # loaded, so it never runs another encoder than the original. The decoder's small arrays travel
    # as they are (they come from the weights, which the copy does not read again). The session,
    # the decoder's threads and the kept latent (up to hundreds of MB) are made anew in the copy.
    def __getstate__(self) -> dict[str, Any]:
        """The runner's options, its encoder's path and sha256 and its decoder, without the ONNX
        Runtime session, the decoder's thread pool or the kept latent."""
        state = self.__dict__.copy()
        for name in ("session", "decoder_pool", "_latent_store"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled or copied runner: its encoder reopened from the same file, checked
        against the sha256 the original loaded (a one-line WeightsError when the file is gone or
        changed), with threads and buffers of its own."""
        self.__dict__.update(state)
        path = self.encoder_path
        try:
            data = path.read_bytes()  # hashed and loaded as read: the file may change after this
        except OSError as exc:  # gone, a directory now, unreadable
            raise WeightsError(f"{path}: cannot read the exported encoder this Refiner was pickled with "
                               f"({exc.strerror or exc}); a copy of a Refiner on the onnx backend reopens it "
                               "(keep the file, or use the torch backend)") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.encoder_sha256:
            raise WeightsError(f"{path}: sha256 {digest[:12]}... is not that of the exported encoder this Refiner "
                               f"was pickled with ({self.encoder_sha256[:12]}...); the file changed since")
        self._start(usable_threads(self.threads) if self.threads else None, data)

    def _start(self, threads: int | None, data: bytes) -> None:
        """What a runner and a copy of it each make for themselves: the ONNX Runtime session of the
        encoder's ``data``, the decoder's thread pool and an empty latent store. ``threads`` as asked
        (bounded); None, the default, is settled in each process (``runtime.quota_limited_threads``:
        a copy may run in a container of another CPU quota)."""
        self.threads = threads
        self.working_threads = threads or quota_limited_threads()
        self.session = open_encoder_session(self.encoder_path, self.working_threads, data)
        self.decoder_pool = DecoderPool(self.working_threads)
        self._latent_store: np.ndarray | None = None

    @property
    def device_name(self) -> str:
        """Human-readable device description."""
        threads = self.working_threads
        return f"cpu ({count_noun(threads, 'thread')}, onnxruntime)" if threads else "cpu (onnxruntime)"

    def inference(self) -> Any:
        """The context every refinement runs in (nothing to switch off here)."""
        return nullcontext()

    def stage_mask(self, mask: np.ndarray) -> np.ndarray:
        """A float32 (H, W) mask as this runner's stage mask (itself)."""
        return mask

    def as_array(self, current: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """A stage mask (resized to ``size`` first, when given) as a float32 (H, W) array."""
        return current if size is None else resize_probability(current, size)

    def release_memory(self) -> bool:
        """Hand back the memory ONNX Runtime's CPU arena keeps from earlier encodings; True when it ran.

        One encoding of the smallest stage input (a one-pixel stage) under
        :func:`arena_shrink_options`: when it ends, the arena frees every region no tensor uses, and
        most of them go straight back to the system (the rest to the C heap, for ``malloc_trim``).
        The session stays as it was, so later outputs are byte-identical. After 30 photos of
        200-1000 px on 2 threads, resident memory went from 475 to 231 MB with ``malloc_trim``
        after it (438 MB with ``malloc_trim`` alone) in 20-75 ms, most of it unmapping; rebuilding
        the session instead freed 4 MB more and took 25-170 ms. The next refinement grows the arena
        again: a 900x700 photo took 1.56 s (median of 8) against 1.46 s after ``malloc_trim``
        alone and 1.40 s with nothing released. Never raises: it is housekeeping. The kept latent
        buffer is let go too (the next refinement allocates it again).
        """
        self._latent_store = None
        try:
            smallest = ArrayStageInput(padded_stage_rgb(np.zeros((1, 1, 3), np.uint8), (1, 1)),
                                       np.zeros((1, 1), np.float32), self.input_norm)
            height, width = smallest.shape
            self.session.run(None, {"x": smallest.crop(0, height, 0, width)}, arena_shrink_options())
        except Exception:  # noqa: BLE001 - housekeeping: nothing of the caller's depends on it
            return False
        return True

    def _encode_tile(self, x: np.ndarray) -> np.ndarray:
        """Projected latent (h/2, w/2, hidden) of one (1, 4, h, w) network input."""
        return self.session.run(None, {"x": x})[0][0]

    def _latent_buffer(self, shape: tuple[int, int, int]) -> np.ndarray:
        """An uninitialised float32 array of ``shape`` in memory this runner keeps between stages.

        A fresh 200-300 MB latent costs 0.05-0.45 s in page faults on every stage (the allocator
        returns such blocks to the OS when they are freed); the largest one is kept and reused.
        """
        size = math.prod(shape)
        if self._latent_store is None or self._latent_store.size < size:
            self._latent_store = None  # let the old block go before the new one is allocated
            self._latent_store = np.empty(size, np.float32)
        return self._latent_store[:size].reshape(shape)

    def _encode(self, x: ArrayStageInput, needed: np.ndarray | None = None) -> np.ndarray:
        """Projected latent for a padded stage input, tiled with overlap when it is large; with
        ``needed`` only tiles holding a needed pixel are encoded (the others' cells are left unset)."""
        height, width = x.shape
        tile, margin, run_tiles = self.tiling(roi=needed is not None)
        if height <= tile and width <= tile:
            return self._encode_tile(x.crop(0, height, 0, width))
        shape = (height // 2, width // 2, self.decoder.hidden_dim)
        g = self._latent_buffer(shape) if self._unencoded_fill is None else np.full(shape, self._unencoded_fill,
                                                                                     np.float32)
        occupied = None if needed is None else occupied_tiles(needed, tile)
        encode_windows(g, x, tile_windows(height, width, tile, occupied, run_tiles), margin, self._encode_tile)
        return g

    def _stage(self, image: np.ndarray, mask: np.ndarray, ratio: float, target_hw: tuple[int, int],
               roi: bool = False, band_px: float | None = None) -> tuple[np.ndarray, StageTiming]:
        """One refinement stage: the probability (``target_hw``) and its timing (``StageRunner._stage``)."""
        height, width = image.shape[:2]
        hs, ws = stage_size(height, width, ratio)
        stage_mask = resize_probability(mask, (hs, ws))
        start = time.perf_counter()
        if float(stage_mask.max()) == 0.0:
            return np.zeros(target_hw, np.float32), StageTiming(ratio, 0.0, 0.0)
        if float(stage_mask.min()) == 1.0:
            return np.ones(target_hw, np.float32), StageTiming(ratio, 0.0, 0.0)
        x = ArrayStageInput(memoized(image, ("padded_stage_rgb", hs, ws), lambda: padded_stage_rgb(image, (hs, ws))),
                            stage_mask, self.input_norm)
        decoder = self.decoder
        if roi:
            prob = resize_probability(mask, target_hw)
            if prob is mask or not prob.flags.c_contiguous:  # decoded pixels are written into it: never the caller's
                prob = np.array(prob, dtype=np.float32, copy=True, order="C")
            radius = math.ceil(2 * target_hw[0] / hs)
            if band_px is not None:
                radius = max(radius, math.ceil(band_px * target_hw[0] / height))
            band = roi_band_array(prob, radius=radius)
            g = self._encode(x, needed=band_to_stage_array(band, (hs, ws), x.shape, STAGE_PAD))
        else:
            g = self._encode(x)
        encoded = time.perf_counter()
        if roi:
            ys, xs = np.nonzero(band)
            rows = decoder.axis_table(target_hw[0], hs, g.shape[0], STAGE_PAD, axis=0)
            cols = decoder.axis_table(target_hw[1], ws, g.shape[1], STAGE_PAD, axis=1)
            logits = decoder.decode_scattered(g, rows, cols, ys, xs, self.decoder_pool)
            prob.reshape(-1)[ys * target_hw[1] + xs] = sigmoid(logits)
        else:
            prob = sigmoid(decoder.decode(g, target_hw, (hs, ws), STAGE_PAD, self.decoder_pool))
        return prob, StageTiming(ratio, encoded - start, time.perf_counter() - encoded)

    def _mirrored_stage(self, image: np.ndarray, mask: np.ndarray, ratio: float, target_hw: tuple[int, int],
                        roi: bool = False, band_px: float | None = None) -> tuple[np.ndarray, StageTiming]:
        """:meth:`_stage` averaged with the same stage on the left-right mirrored image and mask."""
        direct, first = self._stage(image, mask, ratio, target_hw, roi=roi, band_px=band_px)
        mirrored, second = self._stage(np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(mask[:, ::-1]),
                                       ratio, target_hw, roi=roi, band_px=band_px)
        probability = (direct + mirrored[:, ::-1]) / np.float32(2)
        return probability, StageTiming(ratio, first.encode_s + second.encode_s, first.decode_s + second.decode_s)
