"""Device selection: ``auto`` picks the best present; an explicit missing device is an error."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class DeviceError(RuntimeError):
    """The requested device is not available."""


def _mps_available(torch) -> bool:  # noqa: ANN001
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def available_devices() -> list[str]:
    """Devices this process can use, best first (``cuda:N`` for each GPU)."""
    import torch

    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if _mps_available(torch):
        found.append("mps")
    found.append("cpu")
    return found


def device_name(name: Any = "auto") -> str:
    """``name`` checked and spelled as :func:`resolve_device` takes it, without importing torch:
    ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (``cpu:N`` is ``cpu``, as torch runs every CPU
    index on the one CPU device; ``mps:0`` is ``mps``), in any case and with blanks around it, or a
    ``torch.device``; None is ``auto``. A malformed or unknown name is a DeviceError, anything else
    that is no name a TypeError."""
    if type(name).__module__ == "torch" and type(name).__name__ == "device":
        name = str(name)
    elif name is not None and not isinstance(name, str):
        raise TypeError(f"device must be a name such as 'cpu' or 'cuda:0', or a torch.device; got "
                        f"{type(name).__name__} {name!r}")
    name = "auto" if name is None else name.strip().lower()
    if not name:
        raise DeviceError("the device name is empty; choose from auto, cpu, cuda, cuda:N (N = 0, 1, ...), mps")
    kind, colon, index = name.partition(":")
    if kind == "auto" and not colon:
        return kind
    if kind == "cpu":
        if colon and not (index.isascii() and index.isdigit()):
            raise DeviceError(f"invalid device {name!r}: the CPU index must be a whole number ('cpu' or 'cpu:0')")
        return "cpu"
    if kind == "cuda":
        if colon and not (index.isascii() and index.isdigit()):
            raise DeviceError(f"invalid device {name!r}: the GPU index must be a whole number (cuda:0, cuda:1, ...)")
        return f"cuda:{int(index)}" if colon else "cuda"
    if kind == "mps":
        if colon and index != "0":
            raise DeviceError(f"invalid device {name!r}: Apple MPS is one device, 'mps' or 'mps:0'")
        return "mps"
    raise DeviceError(f"unknown device {name!r}; choose from auto, cpu, cuda, cuda:N (N = 0, 1, ...), mps")


def _gpus(count: int) -> str:
    """``2`` -> "2 CUDA GPUs are present (cuda:0, cuda:1)"."""
    listed = ", ".join(f"cuda:{index}" for index in range(count))
    return f"1 CUDA GPU is present ({listed})" if count == 1 else f"{count} CUDA GPUs are present ({listed})"


def _requested(name: str) -> str:
    """``device 'cuda'``, with ``(from CRM_DEVICE)`` when the name is that variable's (which the CLI's
    --device takes): a user who typed no device would not know where it came from."""
    env = os.environ.get("CRM_DEVICE", "").strip()
    try:
        from_env = bool(env) and device_name(env) == name
    except DeviceError:
        from_env = False
    return f"device {name!r}" + (" (from CRM_DEVICE)" if from_env else "")


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto|cpu[:N]|cuda[:N]|mps[:0]`` (any case) into a torch.device, raising DeviceError if it
    is missing or malformed (torch is imported here, not by this module)."""
    import torch

    name = device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available(torch):
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"{_requested(name)} was requested but no CUDA GPU is available "
                              "(use device 'cpu' or 'auto')")
        index = name.partition(":")[2]
        if index and int(index) >= torch.cuda.device_count():
            raise DeviceError(f"{_requested(name)} was requested but only {_gpus(torch.cuda.device_count())}")
        return torch.device(name)
    if not _mps_available(torch):
        raise DeviceError(f"{_requested(name)} was requested but Apple MPS is not available (use device 'cpu' or "
                          "'auto')")
    return torch.device("mps")


def describe_device(device: torch.device) -> str:
    """Human-readable device name, e.g. ``cuda:0 (NVIDIA H100)`` or ``cpu (2 threads)``."""
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        from .errors import count_noun

        return f"cpu ({count_noun(torch.get_num_threads(), 'thread')})"
    return str(device)


def accelerator_possible() -> bool:
    """Whether this machine may have a GPU that torch could use, judged without importing torch
    (unless it is loaded already): an NVIDIA or AMD (ROCm) driver, or Apple silicon (MPS)."""
    import os
    import platform
    import sys

    if "torch" in sys.modules:
        return any(name != "cpu" for name in available_devices())
    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    if sys.platform.startswith("linux"):
        return any(os.path.exists(path) for path in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd"))
    from shutil import which

    return which("nvidia-smi") is not None
