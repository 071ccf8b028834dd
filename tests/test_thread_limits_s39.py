"""A container's pids limit: when no thread can be started, crm works on without one where it can
(the decoder's pool, the lock refresher) and says so in one line where it cannot."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from crm_cli import locks
from crm_cli.errors import THREAD_ADVICE, shortage_message, thread_shortage_message
from crm_cli.onnx_runner import DecoderPool


def test_thread_shortages_are_told_from_other_errors() -> None:
    python = thread_shortage_message(RuntimeError("can't start new thread"))
    assert python == f"cannot start a thread (can't start new thread){THREAD_ADVICE}"
    native = RuntimeError("/onnxruntime_src/core/platform/posix/env.cc:327 onnxruntime::PosixThread::PosixThread("
                          "...) pthread_create failed, error code: 11 error msg: Resource temporarily unavailable")
    assert thread_shortage_message(native) == ("cannot start a thread (pthread_create failed, error code: 11 error "
                                               f"msg: Resource temporarily unavailable){THREAD_ADVICE}")
    assert "try --threads 1" in THREAD_ADVICE
    assert thread_shortage_message(RuntimeError("something else")) is None
    assert thread_shortage_message(ValueError("can't start new thread")) is None
    assert shortage_message(RuntimeError("can't start new thread")) == python
    assert shortage_message(MemoryError("Unable to allocate 1 GiB")).startswith("Unable to allocate 1 GiB; try")


def test_the_decoder_pool_runs_its_chunks_here_when_no_thread_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = DecoderPool(workers=2)
    out = np.zeros(8)

    def job(start: int) -> None:
        out[start:start + 2] = start + 1

    def refused(*args: object, **kwargs: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refused)
    pool.run(job, [0, 2, 4, 6])  # the first use starts the threads: refused
    assert out.tolist() == [1, 1, 3, 3, 5, 5, 7, 7]
    out[:] = 0
    pool.run(job, [0, 2, 4, 6])  # and later uses run here without trying again
    assert out.tolist() == [1, 1, 3, 3, 5, 5, 7, 7] and pool._executor is None
    pool.close()


def test_a_lock_is_taken_and_left_clean_when_its_refresher_cannot_start(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Starting the refresher used to come after the lock file was made and outside the cleanup: the
    # empty file stayed, and other runs reported the pair in progress and did nothing.
    def refused(*args: object, **kwargs: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(locks, "_refresher", None)
    monkeypatch.setattr(threading.Thread, "start", refused)
    lock = locks.OutputLock(tmp_path / "a.png")
    assert lock.acquire()
    assert lock.path.read_text().strip() and not lock.is_stale()
    lock.release()
    assert not lock.path.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [FileNotFoundError(2, "No such file or directory", "/dev/shm"),
                                   OSError(30, "Read-only file system", "/tmp/ray"),
                                   BlockingIOError(11, "Resource temporarily unavailable")])
def test_ray_that_cannot_start_here_is_one_line(monkeypatch: pytest.MonkeyPatch, error: OSError) -> None:
    # Measured with Ray in a private mount namespace: no /dev/shm, a read-only /tmp, or a pids limit
    # each ended `crm batch --ray local` in a traceback.
    ray = pytest.importorskip("ray")
    from crm_cli.raybatch import RayRunError, connect

    def refused(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refused)
    with pytest.raises(RayRunError) as raised:
        connect("local", quiet=True)
    message = str(raised.value)
    assert message.startswith("cannot start Ray at 'local': ") and str(error) in message
    assert "\n" not in message and "writable temp folder, /dev/shm" in message


def test_no_writable_temp_folder_names_tmpdir() -> None:
    # On a read-only root, `crm train` failed with tempfile's bare "No usable temporary directory":
    # torch's optimiser imports torch._dynamo, which makes its cache in the temp folder.
    import typer

    from crm_cli.cli.failures import user_errors

    said: list[str] = []
    with pytest.raises(typer.Exit) as raised, user_errors(said.append):
        raise FileNotFoundError(2, "No usable temporary directory found in ['/tmp', '/var/tmp']")
    assert raised.value.exit_code == 1
    assert said == ["[Errno 2] No usable temporary directory found in ['/tmp', '/var/tmp']; set TMPDIR to a "
                    "folder crm may write"]
    said.clear()
    with pytest.raises(typer.Exit), user_errors(said.append):
        raise FileNotFoundError(2, "No such file or directory", "a.png")
    assert said == ["a.png: no such file or directory"]  # named as crm names files (session 54)


def test_a_session_that_cannot_start_threads_prints_nothing_on_stdout(
        capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # ONNX Runtime's Python layer printed an "EP Error ... Falling back to ['CPUExecutionProvider']"
    # banner to stdout, which carries crm's data (-o -, --json), and then failed the same way again.
    from onnxruntime.capi import onnxruntime_inference_collection as collection

    from crm_cli.onnx_runner import open_encoder_session

    tries: list[object] = []

    def no_threads(self: object, *args: object, **kwargs: object) -> None:
        tries.append(args)
        raise RuntimeError("/onnxruntime/core/platform/posix/env.cc:187 onnxruntime::{anonymous}::PosixThread::"
                           "PosixThread(...) pthread_create failed, error code: 11 error msg: Resource temporarily "
                           "unavailable")

    monkeypatch.setattr(collection.InferenceSession, "_create_inference_session", no_threads)
    encoder = Path(__file__).resolve().parents[1] / "weights" / "crm_mobilenet_v2_blend.encoder.onnx"
    with pytest.raises(RuntimeError) as raised:
        open_encoder_session(encoder, threads=1)
    assert thread_shortage_message(raised.value) == (
        "cannot start a thread (pthread_create failed, error code: 11 error msg: Resource temporarily unavailable)"
        + THREAD_ADVICE)
    captured = capfd.readouterr()
    assert captured.out == "" and "Falling back" not in captured.err
    assert len(tries) == 1  # not retried on the same provider
