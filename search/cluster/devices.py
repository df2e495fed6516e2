"""Which GPU each worker process gets: `--devices auto|cpu|0,1,...` and `--workers-per-device K`.

Several small tabular trials share one GPU well, so K processes per device is the normal case.
A process is pinned by `CUDA_VISIBLE_DEVICES` before anything in it touches CUDA; it then sees
its one GPU as device 0, and Lightning trains with `devices=1`. On a machine without a GPU (or
with `cpu`) every process trains on the CPU and the GPUs stay hidden.

The processes sharing a GPU each get an equal share of its memory as a cap on their caching
allocator. Without one, a process that once held a large batch keeps those blocks reserved,
and a neighbour's trial fails with an out-of-memory error it did not cause; with the cap, a
trial too large for its share fails in its own process, and says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lightning_modules.errors import TabslimInputError
from search.config import Config, override

__all__ = ["CPU", "Slot", "gpu_count", "parse_devices", "pin", "pinned", "plan_slots", "slots_for"]

CPU = "cpu"
_VISIBLE = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class Slot:
    """One worker process's device: a GPU index as the machine numbers it, or None (CPU)."""

    gpu: int | None
    # On a machine with GPUs that were asked not to be used (`--devices cpu`).
    hide_gpus: bool = False
    # How many processes share this GPU; each may use that share of its memory.
    sharing: int = 1

    @property
    def memory_fraction(self) -> float:
        return 1.0 / self.sharing

    @property
    def label(self) -> str:
        return CPU if self.gpu is None else f"cuda:{self.gpu}"


def parse_devices(text: str) -> str | list[int]:
    """ "auto", "cpu", or GPU indices "0,1,..."; a one-line error for anything else."""
    value = text.strip().lower()
    if value in ("auto", CPU):
        return value
    try:
        indices = [int(part) for part in value.split(",")]
    except ValueError:
        indices = []
    if not indices or any(i < 0 for i in indices) or len(set(indices)) != len(indices):
        raise TabslimInputError(
            f"--devices takes auto, cpu, or distinct GPU indices like 0,1, but got {text!r}"
        )
    return indices


def gpu_count() -> int:
    """GPUs this process may use (respecting an outer CUDA_VISIBLE_DEVICES), counted through
    NVML, so that CUDA is not started here and this process can still be pinned."""
    import torch

    if not torch.backends.cuda.is_built():
        return 0
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    return int(torch.cuda.device_count())


def plan_slots(
    devices: str | list[int], workers: int, workers_per_device: int | None, available: int
) -> list[Slot]:
    """The device of each of the processes, the coordinator's first.

    With `workers_per_device` the count is that many per device; otherwise it is `workers`,
    dealt round-robin over the devices.
    """
    if workers_per_device is not None and workers_per_device < 1:
        raise TabslimInputError(
            f"--workers-per-device must be at least 1, but got {workers_per_device}"
        )
    if devices == CPU or (devices == "auto" and available == 0):
        count = workers if workers_per_device is None else workers_per_device
        return [Slot(None, hide_gpus=available > 0)] * count
    gpus: list[int] = list(range(available)) if isinstance(devices, str) else list(devices)
    missing = [g for g in gpus if g >= available]
    if missing:
        raise TabslimInputError(
            f"--devices names GPU {missing[0]}, but this machine has "
            f"{available} GPU{'s' if available != 1 else ''}"
            + (f" (0 to {available - 1})" if available else "")
        )
    if workers_per_device is not None:
        dealt = [g for g in gpus for _ in range(workers_per_device)]
    else:
        dealt = [gpus[i % len(gpus)] for i in range(workers)]
    return [Slot(g, sharing=dealt.count(g)) for g in dealt]


def pin(slot: Slot) -> str | None:
    """Pin this process to `slot`'s device; returns the Lightning accelerator to train with, or
    None to leave the config's (a machine without GPUs: nothing to pin).

    Call it before anything touches CUDA: the runtime reads the variable once, at its start.
    """
    if slot.gpu is None:
        if slot.hide_gpus:
            os.environ[_VISIBLE] = ""
            return CPU
        return None
    # The index as the machine numbers it, within any outer restriction (a scheduler's).
    outer = os.environ.get(_VISIBLE)
    visible = [v for v in outer.split(",") if v] if outer else None
    os.environ[_VISIBLE] = visible[slot.gpu] if visible else str(slot.gpu)
    if slot.sharing > 1:
        _cap_memory(slot.memory_fraction)
    return "gpu"


def _cap_memory(fraction: float) -> None:
    """Cap this process's CUDA caching allocator at `fraction` of its (one visible) GPU.

    This starts CUDA in the process, so it runs only once the process is pinned.
    """
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(fraction, 0)


def pinned(config: Config, slot: Slot, processes: int) -> Config:
    """Pin this process to `slot` and return the config it trains with: its accelerator, and
    `processes` workers among which the CPU threads are split."""
    accelerator = pin(slot)
    return override(
        config,
        "from --devices",
        **{"training.accelerator": accelerator, "search.workers": processes},
    )


def slots_for(config: Config) -> list[Slot]:
    """The device of each process the search config asks for, the calling process's first."""
    search = config.search
    return plan_slots(
        parse_devices(search.devices), search.workers, search.workers_per_device, gpu_count()
    )
