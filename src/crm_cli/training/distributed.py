"""torchrun's environment (world size, ranks) and the device a training process uses."""

from __future__ import annotations

import os

import torch

from ..devices import device_name

# torchrun's environment variables read here: the least value each can take (also the value where
# it is not set, a run alone) and what torchrun sets it to.
TORCHRUN_VARIABLES = {
    "WORLD_SIZE": (1, "the number of processes training together"),
    "RANK": (0, "the number of this process among them"),
    "LOCAL_RANK": (0, "the number of this process on its machine, the GPU it trains on"),
}


def torchrun_variable(name: str) -> int:
    """torchrun's environment variable ``name`` (a key of TORCHRUN_VARIABLES) as a whole number, its
    least value where it is not set. Any other value than a whole number >= that least value is a
    ValueError naming the variable."""
    least, meaning = TORCHRUN_VARIABLES[name]
    value = os.environ.get(name, str(least))
    try:
        number = int(value)
    except ValueError:
        number = least - 1
    if number < least:
        raise ValueError(f"the environment variable {name} is {value!r}, not a whole number >= {least} (torchrun "
                         f"sets it to {meaning})")
    return number


def world_size() -> int:
    """The number of processes training together: torchrun's WORLD_SIZE, 1 where it is not set
    (:func:`torchrun_variable`)."""
    return torchrun_variable("WORLD_SIZE")


def check_torchrun_variables() -> None:
    """Read TORCHRUN_VARIABLES, so that a malformed one is a ValueError naming it before anything else
    is done: WORLD_SIZE always, RANK and LOCAL_RANK only where it is above 1 (:func:`rank`), since
    launchers other than torchrun set them to -1 for a run of one process."""
    if world_size() > 1:
        for name in ("RANK", "LOCAL_RANK"):
            torchrun_variable(name)


def rank(name: str = "RANK") -> int:
    """This process's torchrun ``name`` (RANK, or LOCAL_RANK: its number on its machine), 0 in a run of
    one process, whatever the variable holds there (-1 from other launchers)."""
    return torchrun_variable(name) if world_size() > 1 else 0


def torchrun_device_problem(name: str) -> str | None:
    """Why the device ``name`` cannot train under torchrun (WORLD_SIZE > 1), or None: each process
    takes the GPU of its LOCAL_RANK (:func:`training_device`), so a GPU index (cuda:N) would put every
    process on GPU N. A malformed WORLD_SIZE is a ValueError (:func:`world_size`)."""
    if world_size() > 1 and device_name(name).startswith("cuda:"):
        return (f"under torchrun each process trains on the GPU of its LOCAL_RANK; use --device cuda or auto, not "
                f"--device {name}")
    return None


def training_device(name: str = "auto") -> torch.device:
    """The device this training process uses (devices.resolve_device); under torchrun a CUDA
    process takes the GPU of its LOCAL_RANK, and a GPU index is a ValueError
    (:func:`torchrun_device_problem`)."""
    from ..devices import resolve_device

    if (problem := torchrun_device_problem(name)) is not None:
        raise ValueError(problem)
    device = resolve_device(name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", rank("LOCAL_RANK"))
        torch.cuda.set_device(device)
    return device
