"""The host a trial ran on, and a reference latency that makes latencies comparable across hosts.

Workers on different nodes time their trials on different CPUs. Each process times one small,
fixed reference network once, on the study's latency runtime, batch size and thread count, and
every trial records its latency also as a ratio to that reference (`latency_relative`), beside
its host, CPU model and the reference time. With a GPU, the trial's CUDA latency is recorded
too; the objective stays the configured (CPU) runtime, which is what is deployed.
"""

from __future__ import annotations

import functools
import platform
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from lightning_modules.networks import MLPSpec, build
from search.measure.latency import Timing, measure_latency

__all__ = ["HostProfile", "cuda_latency_ms", "host_profile"]

# Small enough to time in a fraction of a second, large enough that the time is not all call
# overhead: 32 inputs, 128-128 hidden, 2 outputs (about 21k parameters).
REFERENCE_SPEC = MLPSpec(d_num=32, cat_cardinalities=(), d_embedding=8, hidden=(128, 128), d_out=2)


@dataclass(frozen=True)
class HostProfile:
    host: str
    cpu_model: str
    reference_ms: float
    gpu: str | None


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=8)
def host_profile(runtime: str, batch_size: int, threads: int) -> HostProfile:
    """This process's host and its reference latency for one timing setup (timed once)."""
    reference = build(REFERENCE_SPEC, seed=0)
    latency = measure_latency(
        reference,
        runtime=runtime,
        batch_size=batch_size,
        threads=threads,
        timing=Timing(max_seconds=0.2),
    )
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return HostProfile(socket.gethostname(), _cpu_model(), latency.median_ms, gpu)


def cuda_latency_ms(network: torch.nn.Module, batch_size: int) -> float | None:
    """The network's median eager latency on this process's GPU, or None without one."""
    if not torch.cuda.is_available():
        return None
    import copy

    on_gpu = copy.deepcopy(network).to("cuda")
    return measure_latency(
        on_gpu, runtime="torch", batch_size=batch_size, timing=Timing(max_seconds=0.1)
    ).median_ms
