"""Session-35 fixes in crm train and crm coco: no pair left to train on is one usage error of --data,
new run or resumed; malformed RANK / LOCAL_RANK are refused as WORLD_SIZE is; the data is refused before
the ranks join their process group; one explicit rule for what counts as running out of memory; and
crm coco's whole-run shortage reads as crm refine's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import flat, write_scene_files
from PIL import Image
from test_train_audit_s33 import options, train, write_pairs
from typer.testing import CliRunner

from crm_cli.cli import app, failures
from crm_cli.cli.options import RefinerOptions
from crm_cli.training import distributed, loop
from crm_cli.training.data import NoTrainingPairsError

runner = CliRunner()
MEMORY_ADVICE = "; try a smaller --tile-size, the 'fast' preset, or a smaller image"
TORCH_ADVICE = ". Try --device cpu, a smaller --tile-size or the 'fast' preset."




# 1. No pair left to train on ----------------------------------------------------------------------------


def test_no_pair_left_to_train_on_is_one_usage_error_of_data_new_or_resumed(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "d", 1)
    val = write_pairs(tmp_path / "v", 2)
    code, stdout, stderr = train("--data", str(data), "--out", str(tmp_path / "new"))
    assert (code, stdout) == (2, ""), stderr
    assert flat(stderr) == flat(
        f"error: Invalid value for --data: {data}: its only pair is held out for validation (every 20th pair is, "
        "unless --val is given), leaving none to train on; add pairs, or pass --val FOLDER to validate on other "
        "pairs\nTry 'crm train --help' for the options.")
    # A run from before --val stopped the split (its checkpoint has no "splits"): resumed with --val, it
    # keeps holding the only pair out. It was "error: <message>", without the option.
    out = tmp_path / "old"
    assert train("--data", str(data), "--out", str(out), "--val", str(val))[0] == 0
    payload = torch.load(out / "last.pt", weights_only=True)
    del payload["splits"]
    torch.save(payload, out / "last.pt")
    code, stdout, stderr = train("--data", str(data), "--out", str(out), "--val", str(val), "--resume")
    assert (code, stdout) == (2, ""), stderr
    assert flat(stderr) == flat(
        f"error: Invalid value for --data: {data}: its only pair is held out for validation (the checkpoint resumed "
        "from held every 20th pair out even with --val, as runs did before --val stopped the split, and a resumed "
        "run keeps its split), leaving none to train on; add pairs, or start a new run in another --out\n"
        "Try 'crm train --help' for the options.")


# 2. RANK and LOCAL_RANK ---------------------------------------------------------------------------------


def rank_refusal(name: str, value: str) -> str:
    """The message a malformed RANK or LOCAL_RANK of ``value`` is refused with."""
    meaning = {"RANK": "the number of this process among them",
               "LOCAL_RANK": "the number of this process on its machine, the GPU it trains on"}[name]
    return (f"the environment variable {name} is {value!r}, not a whole number >= 0 (torchrun sets it to "
            f"{meaning})")


@pytest.mark.parametrize("value", ["abc", "-1", ""])
@pytest.mark.parametrize("name", ["RANK", "LOCAL_RANK"])
def test_a_malformed_rank_is_a_usage_error_before_the_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 no_model: list[object], name: str,
                                                                 value: str) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun; a run of one process does not read them
    monkeypatch.setenv(name, value)
    out = tmp_path / "run"
    code, stdout, stderr = train("--data", str(write_pairs(tmp_path / "d", 3)), "--out", str(out))
    assert (code, stdout, no_model) == (2, "", []), stderr
    assert stderr.splitlines()[0] == f"error: {rank_refusal(name, value)}", stderr
    assert not out.exists()


@pytest.mark.parametrize("name", ["RANK", "LOCAL_RANK"])
def test_the_trainer_refuses_a_malformed_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv(name, "abc")
    with pytest.raises(ValueError) as caught:
        loop.Trainer(options(write_pairs(tmp_path / "d", 3), tmp_path / "run"))
    assert str(caught.value) == rank_refusal(name, "abc")
    monkeypatch.setenv(name, " 3 ")  # what int() reads is read
    assert distributed.torchrun_variable(name) == 3
    monkeypatch.delenv(name)
    assert distributed.torchrun_variable(name) == 0


@pytest.mark.parametrize("name", ["RANK", "LOCAL_RANK"])
def test_a_run_of_one_process_ignores_the_minus_one_of_other_launchers(monkeypatch: pytest.MonkeyPatch,
                                                                       name: str) -> None:
    # Hugging Face's launchers and many scripts set LOCAL_RANK=-1 for "not distributed".
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv(name, "-1")
    distributed.check_torchrun_variables()
    assert distributed.rank(name) == 0
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=name):
        distributed.check_torchrun_variables()


# 3. The data is refused before the ranks join ------------------------------------------------------------


def write_unreadable_pair(root: Path) -> Path:
    """Three pairs whose p01 photo is cut short after its header."""
    write_pairs(root, 3)
    photo = root / "images" / "p01.jpg"
    photo.write_bytes(photo.read_bytes()[:200])
    return root


@pytest.mark.parametrize("problem", ["one pair", "an unreadable pair"])
def test_the_data_is_refused_before_the_ranks_join(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   problem: str) -> None:
    joined: list[str] = []
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend, **kwargs: joined.append(backend))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    data = write_pairs(tmp_path / "d", 1) if problem == "one pair" else write_unreadable_pair(tmp_path / "d")
    with pytest.raises(NoTrainingPairsError if problem == "one pair" else ValueError):
        loop.Trainer(options(data, tmp_path / "run"))
    assert joined == []


def test_the_ranks_join_before_the_model_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []

    def build(*args: object) -> None:
        events.append("model")
        raise RuntimeError("stopped at the model")

    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend, **kwargs: events.append("join"))
    monkeypatch.setattr(loop, "initial_model", build)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="stopped at the model"):
        loop.Trainer(options(write_pairs(tmp_path / "d", 3), tmp_path / "run"))
    assert events == ["join", "model"]


# 4. What counts as running out of memory --------------------------------------------------------------


def test_a_memory_error_holding_try_in_a_word_still_gets_the_advice() -> None:
    # Any "try" in the text (in "entry", "retry") was taken for crm's own advice, and the advice left out.
    for text in ("Unable to allocate 2.00 GiB for the tile cache entry", "allocation failed; will not retry"):
        assert failures.out_of_memory_message(MemoryError(text)) == text + MEMORY_ADVICE


def test_a_runtime_error_that_only_mentions_out_of_memory_is_not_a_shortage() -> None:
    # Any RuntimeError whose text held "out of memory" was one, with the advice to try the CPU.
    for text in ("cannot open /scans/out of memory/crm.pt: invalid header",
                 "the decoder ran out of memory-mapped file handles"):
        assert failures.out_of_memory_message(RuntimeError(text)) is None


def test_the_shortages_covered_before_read_as_before() -> None:
    shortage = failures.out_of_memory_message
    # crm's own estimate (cli.checks.memory_problem) ends in its advice, which is kept as it is.
    estimate = "a.jpg is 20000x20000 (400 MP): refining it needs about 9 GiB of memory, but 2 GiB is available"
    for advice in ("; try --preset balanced --tile-size 512", "; free memory, or downscale or crop the image"):
        assert shortage(MemoryError(estimate + advice)) == estimate + advice
    assert shortage(MemoryError("out of memory" + MEMORY_ADVICE)) == "out of memory" + MEMORY_ADVICE  # once
    assert shortage(MemoryError()) == "out of memory" + MEMORY_ADVICE
    # torch's on a GPU, by type or by its words (a CUDA call's error code), with the advice to try the CPU.
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert shortage(oom) == "CUDA out of memory. Tried to allocate 2.00 GiB" + TORCH_ADVICE
    mps = "MPS backend out of memory (MPS allocated: 8.00 GB, other allocations: 1.00 GB)"
    assert shortage(RuntimeError(mps)) == mps + TORCH_ADVICE
    # A many-line one: the advice after its first line, the rest on indented lines (session 38).
    assert shortage(RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported")) \
        == "CUDA error: out of memory" + TORCH_ADVICE + "\n  CUDA kernel errors might be asynchronously reported"
    assert shortage(RuntimeError("CUDA error: device-side assert triggered")) is None
    assert shortage(ValueError("out of memory")) is None


def test_torchs_shortage_on_the_cpu_is_out_of_memory() -> None:
    try:
        torch.empty(1 << 60, dtype=torch.uint8)  # 1 EiB: refused by the allocator, nothing is allocated
    except RuntimeError as exc:
        error = exc
    else:
        pytest.skip("torch allocated 1 EiB")
    message = failures.out_of_memory_message(error)
    assert message is not None and message.startswith("DefaultCPUAllocator: ") and message.endswith(MEMORY_ADVICE)
    assert message[: -len(MEMORY_ADVICE)] in str(error)


# 5. crm coco's shortage reads as crm refine's ---------------------------------------------------------


SQUARE = [40.0, 30.0, 90.0, 30.0, 90.0, 80.0, 40.0, 80.0]


class FailingRefiner:
    """Stands in for the model: raises ``error`` on every instance."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def refine(self, image: np.ndarray, mask: np.ndarray, **options: object) -> np.ndarray:
        raise self.error


def test_coco_running_out_of_memory_reads_as_refine(tmp_path: Path, tiny_weights: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    error = MemoryError()  # as NumPy raises for one huge instance
    expected = "out of memory" + MEMORY_ADVICE
    photo, mask = write_scene_files(tmp_path / "pair", "p0_im", "p0_seg")

    def refine_files(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr("crm_cli.pipeline.refine_files", refine_files)
    refine = runner.invoke(app, ["refine", str(photo), str(mask), "-o", str(tmp_path / "o.png"),
                                 "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert refine.exit_code == 1 and json.loads(refine.stdout)["error"] == expected, refine.output
    assert f"error: {expected}" in flat(refine.stderr)

    monkeypatch.setattr(RefinerOptions, "load", lambda self, quiet=False: FailingRefiner(error))
    Image.fromarray(np.zeros((120, 160, 3), np.uint8)).save(tmp_path / "a.png")
    annotation = {"id": 5, "image_id": 1, "category_id": 1, "segmentation": [SQUARE], "area": 1,
                  "bbox": [0, 0, 1, 1], "iscrowd": 0}
    (tmp_path / "in.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "height": 120, "width": 160}], "annotations": [annotation]}))
    output = tmp_path / "out.json"
    result = runner.invoke(app, ["coco", str(tmp_path / "in.json"), "--images", str(tmp_path), "-o", str(output),
                                 "--json"])
    assert result.exit_code == 1 and not isinstance(result.exception, MemoryError), result.exception
    # One instance out of memory fails on its own line, as a pair does in crm batch, and the run goes on.
    summary = json.loads(result.stdout)
    assert summary["failed"] == 1
    assert summary["failures"] == [{"index": 0, "id": 5, "error": expected, "file_name": "a.png"}]
    assert f"instance 5 (annotation #0, a.png): {expected}" in flat(result.stderr)
