"""--ray: the Ray Data backend of `crm batch` and `crm coco`, against one local Ray instance (kept small:
Ray's start-up alone takes seconds)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import coarse_of, synthetic_scene
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.raybatch import ActorPlan, RayRunError, plan_actors

runner = CliRunner()


@pytest.fixture(scope="module")
def local_ray():  # noqa: ANN201
    """One local Ray instance with 2 CPUs for the whole module; `--ray local` joins it."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def one_thread():  # noqa: ANN201
    """Run with one torch thread (identical reductions in both paths) and restore the setting after."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def big_layout(folder: Path, count: int = 3) -> Path:
    """``count`` BIG-layout pairs (one in a sub-folder) and one pair whose image is not an image."""
    for k in range(count):
        where = folder / ("sub" if k == count - 1 else "")
        where.mkdir(parents=True, exist_ok=True)
        image, gt = synthetic_scene(96, 128, seed=k)
        cv2.imwrite(str(where / f"p{k}_im.png"), image[:, :, ::-1])
        cv2.imwrite(str(where / f"p{k}_seg.png"), coarse_of(gt))
    (folder / "bad_im.jpg").write_bytes(b"not an image")
    cv2.imwrite(str(folder / "bad_seg.png"), np.zeros((8, 8), np.uint8))
    return folder


def outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def without_seconds(summary: dict) -> dict:
    return {**summary, "output_dir": None, "items": [{k: v for k, v in item.items() if k not in ("seconds", "output")}
                                                      for item in summary["items"]]}


def test_batch_on_ray_matches_the_plain_batch_resumes_and_reports_a_bad_pair(
        local_ray, one_thread, tiny_weights, tmp_path) -> None:  # noqa: ANN001
    data = big_layout(tmp_path / "data")
    common = ["-w", str(tiny_weights), "-d", "cpu", "--threads", "1", "--json"]
    plain = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "plain"), *common])
    on_ray = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "ray"), *common, "--ray", "local"])
    assert plain.exit_code == 1 and on_ray.exit_code == 1, on_ray.output
    first = json.loads(on_ray.stdout)
    assert (first["done"], first["skipped"], first["failed"]) == (3, 0, 1)
    assert without_seconds(first) == without_seconds(json.loads(plain.stdout))
    assert "bad" in on_ray.stderr and "not a recognised image" in on_ray.stderr
    written = outputs(tmp_path / "ray")
    assert list(written) == ["p0_mask.png", "p1_mask.png", "sub/p2_mask.png"]
    assert written == outputs(tmp_path / "plain")  # byte for byte

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*.png")}
    rerun = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "ray"), *common, "--ray", "local"])
    assert rerun.exit_code == 1
    again = json.loads(rerun.stdout)
    assert (again["done"], again["skipped"], again["failed"]) == (0, 3, 1)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("*.png")} == stamps


def test_coco_on_ray_writes_the_same_file_as_the_plain_run(local_ray, one_thread, tmp_path) -> None:  # noqa: ANN001
    from test_coco import make_dataset

    annotations, images, _ = make_dataset(tmp_path)
    common = ["--images", str(images), "-d", "cpu", "--threads", "1", "--json"]
    plain = runner.invoke(app, ["coco", str(annotations), "-o", str(tmp_path / "plain.json"), *common])
    on_ray = runner.invoke(app, ["coco", str(annotations), "-o", str(tmp_path / "ray.json"), *common,
                                 "--ray", "local"])
    assert plain.exit_code == 1 and on_ray.exit_code == 1, on_ray.output
    summary = json.loads(on_ray.stdout)
    assert (summary["refined"], summary["failed"]) == (3, 2)
    assert summary["failures"] == json.loads(plain.stdout)["failures"]
    assert (tmp_path / "ray.json").read_bytes() == (tmp_path / "plain.json").read_bytes()


def test_bad_weights_fail_in_the_driver_before_any_actor_starts(local_ray, tmp_path) -> None:  # noqa: ANN001
    data = big_layout(tmp_path / "data", count=1)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    result = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "o"), "-w", str(junk), "--ray", "local"])
    assert result.exit_code == 1 and "not a crm checkpoint" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["batch", "coco"])
def test_ray_option_without_ray_names_the_extra(command, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    (tmp_path / "a.json").write_text('{"images": [], "annotations": []}')
    args = {"batch": ["batch", str(tmp_path), "-o", str(tmp_path / "out")],
            "coco": ["coco", str(tmp_path / "a.json"), "--images", str(tmp_path), "-o", str(tmp_path / "b.json")]}
    result = runner.invoke(app, [*args[command], "--ray", "local"])
    assert result.exit_code == 2
    first, *rest = result.stderr.strip().splitlines()
    assert first.startswith("error: --ray needs Ray") and "pip install 'crm-cli[ray]'" in first
    assert all(line.startswith("Try 'crm ") for line in rest)  # at most the usual usage hint, no traceback
    assert not (tmp_path / "out").exists() and not (tmp_path / "b.json").exists()


def test_actor_pool_takes_one_gpu_per_actor_when_there_are_gpus() -> None:
    assert plan_actors({"CPU": 32, "GPU": 4}, "auto", None, jobs=100) == ActorPlan(4, 1, 1, None)
    assert plan_actors({"CPU": 32, "GPU": 4}, "auto", None, jobs=2) == ActorPlan(2, 1, 1, None)
    assert plan_actors({"CPU": 32, "GPU": 4}, "cpu", None, jobs=100) == ActorPlan(8, 4, 0, 4)
    assert plan_actors({"CPU": 2}, "auto", None, jobs=100) == ActorPlan(1, 2, 0, 2)
    assert plan_actors({"CPU": 16}, "cpu", 8, jobs=100) == ActorPlan(2, 8, 0, 8)
    with pytest.raises(RayRunError, match="no GPUs"):
        plan_actors({"CPU": 8}, "cuda", None, jobs=3)


def test_the_clusters_error_messages_go_to_stderr_not_stdout(local_ray, tiny_weights, capfd) -> None:  # noqa: ANN001
    """The driver prints a message pushed by the cluster ("(raylet) A worker died ...") on the
    sys.stdout of that moment; it must not land among the data on stdout."""
    from crm_cli.raybatch import ray_run
    from crm_cli.refiner_spec import RefinerSpec

    def push_a_cluster_message(refiner, job):  # noqa: ANN001, ANN202
        import time

        import ray._private.utils
        import ray._private.worker

        ray._private.utils.push_error_to_driver(ray._private.worker.global_worker, "test", "MESSAGE-FROM-THE-CLUSTER")
        time.sleep(3)  # the driver's listener prints it while the run is still going
        return {"job": job["n"]}

    spec = RefinerSpec(weights=str(tiny_weights), device="cpu", threads=1)
    with ray_run("local", [{"n": 7}], push_a_cluster_message, spec) as run:
        results = list(run)
    print("DATA")
    out, err = capfd.readouterr()
    assert results == [(0, {"job": 7})]
    assert out == "DATA\n"
    assert "MESSAGE-FROM-THE-CLUSTER" in err


def test_coco_on_ray_stopped_by_a_full_disk_prints_its_record_on_stdout(local_ray, one_thread, tmp_path,
                                                                         monkeypatch) -> None:  # noqa: ANN001
    """The loop leaves the Ray run early (its progress file cannot be written): the run's `with` is
    left first, so the failure record goes to stdout, not to the stderr that stood in for it."""
    import errno

    from test_coco import make_dataset

    from crm_cli.coco.files import Sidecar

    def full_disk(self, result):  # noqa: ANN001, ANN202
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Sidecar, "append", full_disk)
    annotations, images, _ = make_dataset(tmp_path)
    result = runner.invoke(app, ["coco", str(annotations), "-o", str(tmp_path / "ray.json"), "--images", str(images),
                                 "-d", "cpu", "--threads", "1", "--json", "--ray", "local"])
    assert result.exit_code == 1, result.output
    record = json.loads(result.stdout)
    assert record["status"] == "failed" and "partial.jsonl" in record["error"]
    assert "No space left" in result.stderr or "no space left" in result.stderr.lower()


class Stop(Exception):
    pass


@pytest.mark.parametrize("leave", ["end", "break", "exception"])
def test_a_ray_run_holds_stdout_on_stderr_until_its_with_is_left(local_ray, tiny_weights, leave) -> None:  # noqa: ANN001
    from crm_cli.raybatch import ray_run
    from crm_cli.refiner_spec import RefinerSpec

    spec = RefinerSpec(weights=str(tiny_weights), device="cpu", threads=1)
    before = sys.stdout
    seen = []
    with pytest.raises(Stop) if leave == "exception" else contextlib.nullcontext():
        with ray_run("local", [{"n": 1}, {"n": 2}], lambda refiner, job: {"n": job["n"]}, spec) as run:
            for result in run:
                assert sys.stdout is sys.stderr
                seen.append(result)
                if leave == "break":
                    break
                if leave == "exception":
                    raise Stop
    assert sys.stdout is before
    assert len(seen) == (2 if leave == "end" else 1)
    # Ray was already running here (local_ray): the run leaves it running for the next one.
    assert local_ray.is_initialized()


@pytest.mark.parametrize("leave", ["end", "exception"])
def test_a_ray_run_shuts_down_the_ray_it_started_when_its_with_is_left(local_ray, tiny_weights, monkeypatch,  # noqa: ANN001
                                                                       leave) -> None:  # noqa: ANN001
    """The path where the command started Ray itself (connect says so): leaving the run shuts that
    Ray down once, after the last result and with stdout still on stderr. (Here connect only joins
    the module's Ray and shutdown is recorded, so the Ray the other tests use keeps running.)"""
    from crm_cli import raybatch
    from crm_cli.refiner_spec import RefinerSpec

    monkeypatch.setattr(raybatch, "connect", lambda address, quiet=False: local_ray.is_initialized())
    shutdowns = []
    monkeypatch.setattr(local_ray, "shutdown", lambda: shutdowns.append(sys.stdout is sys.stderr))
    spec = RefinerSpec(weights=str(tiny_weights), device="cpu", threads=1)
    before = sys.stdout
    with pytest.raises(Stop) if leave == "exception" else contextlib.nullcontext():
        with raybatch.ray_run("local", [{"n": 1}], lambda refiner, job: {"n": job["n"]}, spec) as run:
            assert list(run) == [(0, {"n": 1})] and shutdowns == []
            if leave == "exception":
                raise Stop
    assert shutdowns == [True]  # once, while Ray's own last lines still went to stderr
    assert sys.stdout is before


def test_a_sigterm_while_ray_starts_stops_the_command_as_any_sigterm(monkeypatch) -> None:  # noqa: ANN001
    """ray.init sets a SIGTERM handler of its own (sys.exit) while it starts: a SIGTERM then exited
    15 with no stop line; the command's handler takes it instead (exit 143)."""
    import os
    import signal

    import typer

    ray = pytest.importorskip("ray")
    from crm_cli.cli.stops import stops_cleanly
    from crm_cli.raybatch import connect

    def starting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # as ray.init does
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", starting)
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with pytest.raises(typer.Exit) as stopped, stops_cleanly():
            connect("local")
        assert stopped.value.exit_code == 143
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)
