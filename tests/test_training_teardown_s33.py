"""A data loader worker that dies while being stopped (session 33).

Under load a worker aborted in its C++ teardown; torch's SIGCHLD handler raised "DataLoader worker
... is killed by signal: Aborted" from the shutdown, which replaced the error that had stopped the
run (too many damaged pairs) and would have failed a finished one."""

from __future__ import annotations

import logging

import pytest

from crm_cli.training.loader import workers_stopped_after


class _DyingLoader:
    """Stands for torch's multi-process iterator: its shutdown meets a worker that died."""

    def __init__(self, error: str) -> None:
        self.error = error
        self.shut = 0

    def __iter__(self) -> _DyingLoader:
        return self

    def __next__(self) -> object:
        raise StopIteration

    def _shutdown_workers(self) -> None:
        self.shut += 1
        raise RuntimeError(self.error)


DIED = "DataLoader worker (pid 25372) is killed by signal: Aborted. "


def test_the_error_that_stopped_the_run_is_the_one_raised(caplog: pytest.LogCaptureFixture) -> None:
    loader = _DyingLoader(DIED)
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match="3 of the 20 training pairs"):
        with workers_stopped_after(loader):  # type: ignore[arg-type]
            raise ValueError("3 of the 20 training pairs cannot be read")
    assert loader.shut == 1
    assert [record.getMessage() for record in caplog.records] == [
        f"a data loader worker ended abnormally while being stopped ({DIED}); the steps the run took are not "
        "affected"]


def test_a_finished_run_is_not_failed_by_a_worker_dying_at_its_end(caplog: pytest.LogCaptureFixture) -> None:
    loader = _DyingLoader(DIED)
    with caplog.at_level(logging.WARNING), workers_stopped_after(loader) as batches:  # type: ignore[arg-type]
        assert list(batches) == []
    assert loader.shut == 1 and len(caplog.records) == 1


def test_other_errors_of_the_shutdown_are_raised() -> None:
    with pytest.raises(RuntimeError, match="^something else$"), workers_stopped_after(
            _DyingLoader("something else")):  # type: ignore[arg-type]
        pass
