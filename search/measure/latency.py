"""Latency of a network on eager torch and on ONNX Runtime: absolute, and as interleaved ratios.

Absolute latencies on shared, noisy machines drift from minute to minute, so a speed-up should
come from `compare_latency`, which interleaves candidate and reference and reports the ratio;
`measure_latency` gives absolute figures for people to read in MLflow.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import pandas as pd
import torch
from torch import nn

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import evaluating
from lightning_modules.preprocessing import Preprocessor
from search.config.choices import RUNTIMES
from search.measure.clock import Call, block_size, time_block, time_calls
from search.measure.export import example_inputs, export_onnx
from search.measure.served_graph import compose

if TYPE_CHECKING:
    import onnxruntime as ort

    from lightning_modules.data import TabularDataModule


@dataclass(frozen=True)
class Latency:
    """Wall-clock time of one forward call, over `repeats` timed calls after a warm-up."""

    runtime: str
    batch_size: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    iqr_ms: float
    repeats: int
    threads: int

    def to_metrics(self, prefix: str = "latency") -> dict[str, float]:
        """Flat MLflow names, e.g. `latency_onnxruntime_b1024_median_ms`."""
        key = f"{prefix}_{self.runtime}_b{self.batch_size}"
        return {
            f"{key}_median_ms": self.median_ms,
            f"{key}_p10_ms": self.p10_ms,
            f"{key}_p90_ms": self.p90_ms,
            f"{key}_iqr_ms": self.iqr_ms,
        }


@dataclass(frozen=True)
class LatencyRatio:
    """Candidate time / reference time, from rounds that interleave the two.

    `median` below 1 means the candidate is faster. `calls_per_round` is (candidate,
    reference). `candidate_ms` and `reference_ms` are median per-call times from the same
    rounds, for reading, not for comparing across runs.
    """

    runtime: str
    batch_size: int
    median: float
    p10: float
    p90: float
    rounds: int
    calls_per_round: tuple[int, int]
    threads: int
    candidate_ms: float
    reference_ms: float

    def to_metrics(self, prefix: str = "latency_ratio") -> dict[str, float]:
        """Flat MLflow names, e.g. `latency_ratio_torch_b1024_median`."""
        key = f"{prefix}_{self.runtime}_b{self.batch_size}"
        return {f"{key}_median": self.median, f"{key}_p10": self.p10, f"{key}_p90": self.p90}


@dataclass(frozen=True)
class ServedRows:
    """Raw rows and their fitted preprocessing. With them, an ONNX Runtime latency times the
    served graph (`search.measure.served_graph`: preprocessing, network and decoding) on raw
    columns, which is what a user's row costs, not the network alone."""

    preprocessor: Preprocessor
    rows: pd.DataFrame

    def __post_init__(self) -> None:
        assert len(self.rows) > 0, "served latency needs at least one raw row"

    @classmethod
    def from_data(cls, data: TabularDataModule, rows: int = 1024) -> ServedRows:
        """Up to `rows` validation rows of `data`, as a user sends them (no target)."""
        frame = data.val_frame.drop(columns=[data.target]).head(rows).reset_index(drop=True)
        return cls(data.preprocessor, frame)

    def feeds(self, batch_size: int) -> dict[str, np.ndarray]:
        """The graph's inputs for `batch_size` rows, the given rows repeated as needed."""
        picked = np.resize(np.arange(len(self.rows)), batch_size)
        return self.preprocessor.raw_columns(self.rows.iloc[picked])


def check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise TabslimInputError(f"runtime must be one of {sorted(RUNTIMES)}, but got {runtime=}")


def check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise TabslimInputError(f"{name} must be at least 1, but got {name}={value!r}")


def check_budget(*, min_repeats: int, max_repeats: int, max_seconds: float) -> None:
    if max_repeats < min_repeats:
        raise TabslimInputError(
            f"the most repeats must be at least the fewest, but got {max_repeats=} "
            f"and {min_repeats=}"
        )
    if not max_seconds >= 0:
        raise TabslimInputError(f"max_seconds must be at least 0, but got {max_seconds=}")


@dataclass(frozen=True)
class Timing:
    """How long one latency is timed: `warmup` untimed calls, then timed calls until
    `max_repeats`, or, once `min_repeats` are in, until `max_seconds` are spent."""

    warmup: int = 5
    min_repeats: int = 10
    max_repeats: int = 500
    max_seconds: float = 0.25
    # A call slower than this (the first warm-up's time) gets at most 2 warm-ups and 3 timed
    # calls: a 2.3M-parameter FT-Transformer's served graph takes 0.5 s at 1,024 rows, and 15
    # calls of it made a trial's measuring 9 s; so long a call varies little between calls.
    slow_seconds: float = 0.1

    def __post_init__(self) -> None:
        check_positive(warmup=self.warmup, min_repeats=self.min_repeats)
        check_budget(
            min_repeats=self.min_repeats, max_repeats=self.max_repeats, max_seconds=self.max_seconds
        )


# The timing a latency gets unless the caller gives one (frozen, so one instance serves all).
DEFAULT_TIMING = Timing()


def measure_latency(
    network: nn.Module,
    *,
    runtime: str,
    batch_size: int,
    threads: int = 1,
    timing: Timing = DEFAULT_TIMING,
    onnx_path: str | Path | None = None,
    served: ServedRows | None = None,
) -> Latency:
    """Time single forward calls of `network` on `runtime` with a fixed thread count.

    Args:
        runtime: "torch" (eager, on the device of the network's parameters, eval mode,
            inference mode) or "onnxruntime" (CPU provider, all graph optimisations).
        onnx_path: an export of this network to reuse; without it the network is exported to
            a temporary file first, which takes about a second.
        served: on "onnxruntime", time the served graph on these raw rows instead of the
            network's graph on tensors.
    """
    check_runtime(runtime)
    check_positive(batch_size=batch_size, threads=threads)
    with runner(network, runtime, threads, onnx_path, served) as make_call:
        call = make_call(batch_size)
        first_ns = time_calls(call, 1, 1, 0.0)[0]  # the first warm-up, timed
        slow = first_ns / 1e9 > timing.slow_seconds
        warmup, min_repeats = timing.warmup, timing.min_repeats
        if slow:
            warmup, min_repeats = min(warmup, 2), min(min_repeats, 3)
        for _ in range(warmup - 1):
            call()
        samples = time_calls(call, min_repeats, timing.max_repeats, timing.max_seconds)
    p10, p25, p50, p75, p90 = np.percentile(samples, [10, 25, 50, 75, 90]) / 1e6
    return Latency(
        runtime=runtime,
        batch_size=batch_size,
        median_ms=float(p50),
        p10_ms=float(p10),
        p90_ms=float(p90),
        iqr_ms=float(p75 - p25),
        repeats=len(samples),
        threads=threads,
    )


def compare_latency(
    candidate: nn.Module,
    reference: nn.Module,
    *,
    runtime: str,
    batch_size: int,
    threads: int = 1,
    rounds: int = 30,
    min_rounds: int = 5,
    max_seconds: float = 1.0,
    calls_per_round: int | None = None,
    warmup: int = 3,
) -> LatencyRatio:
    """Latency of `candidate` relative to `reference`, measured side by side.

    Each round times a block of calls of each network, alternating which goes first, and
    gives one ratio of per-call times; the result is the median ratio and its p10/p90. Load on
    a shared machine drifts slowly, so both blocks of a round see about the same load and the
    ratio stays stable where absolute times do not.

    Args:
        rounds: the most rounds; after `min_rounds`, rounds stop once `max_seconds` is spent.
        calls_per_round: calls per block for both networks; by default each network gets
            enough calls for its block to last about 2 ms (one call of a small network is too
            short to time well), and a single call when one call takes longer.
    """
    check_runtime(runtime)
    check_positive(batch_size=batch_size, threads=threads, warmup=warmup, min_rounds=min_rounds)
    check_budget(min_repeats=min_rounds, max_repeats=rounds, max_seconds=max_seconds)
    if calls_per_round is not None:
        check_positive(calls_per_round=calls_per_round)
    with _paired_calls(candidate, reference, runtime, batch_size, threads) as calls:
        # Warm-up doubles as calibration: the fastest warm-up call of each is its typical cost.
        single_ns = [min(time_calls(call, warmup, warmup, 0.0)) for call in calls]
        blocks = (
            (block_size(single_ns[0]), block_size(single_ns[1]))
            if calls_per_round is None
            else (calls_per_round, calls_per_round)
        )
        ratios, per_call_ns = _interleaved_rounds(calls, blocks, rounds, min_rounds, max_seconds)
    p10, p50, p90 = np.percentile(ratios, [10, 50, 90])
    return LatencyRatio(
        runtime=runtime,
        batch_size=batch_size,
        median=float(p50),
        p10=float(p10),
        p90=float(p90),
        rounds=len(ratios),
        calls_per_round=blocks,
        threads=threads,
        candidate_ms=float(np.median(per_call_ns[0])) / 1e6,
        reference_ms=float(np.median(per_call_ns[1])) / 1e6,
    )


@contextlib.contextmanager
def _paired_calls(
    candidate: nn.Module, reference: nn.Module, runtime: str, batch_size: int, threads: int
) -> Iterator[tuple[Call, Call]]:
    """One ready forward call of each network on `runtime`, exported first for ONNX Runtime."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        calls: list[Call] = []
        for name, network in (("candidate", candidate), ("reference", reference)):
            onnx_path = (
                export_onnx(network, tmp / f"{name}.onnx") if runtime == "onnxruntime" else None
            )
            make_call = stack.enter_context(runner(network, runtime, threads, onnx_path))
            calls.append(make_call(batch_size))
        yield calls[0], calls[1]


def _interleaved_rounds(
    calls: tuple[Call, Call],
    blocks: tuple[int, int],
    rounds: int,
    min_rounds: int,
    max_seconds: float,
) -> tuple[list[float], tuple[list[float], list[float]]]:
    """Per round, candidate / reference per-call time; and each one's per-call nanoseconds."""
    ratios: list[float] = []
    per_call_ns: tuple[list[float], list[float]] = ([], [])
    start = time.perf_counter_ns()
    for i in range(rounds):
        # Alternate which goes first, so that neither always runs on a warmer cache.
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for which in order:
            per_call_ns[which].append(time_block(calls[which], blocks[which]) / blocks[which])
        ratios.append(per_call_ns[0][-1] / max(per_call_ns[1][-1], 1.0))
        spent = (time.perf_counter_ns() - start) / 1e9
        if i + 1 >= min_rounds and spent >= max_seconds:
            break
    return ratios, per_call_ns


def _device(network: nn.Module) -> torch.device:
    parameter = next(network.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def inputs_on_device(network: nn.Module, batch_size: int) -> tuple[torch.Tensor, ...]:
    device = _device(network)
    return tuple(t.to(device) for t in example_inputs(network, batch_size))


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def ort_session(path: str | Path, threads: int) -> ort.InferenceSession:
    """An ONNX Runtime session on the CPU with a fixed thread count and every optimisation."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # One graph, run sequentially: a second pool of inter-op threads would only compete.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def runner(
    network: nn.Module,
    runtime: str,
    threads: int,
    onnx_path: str | Path | None,
    served: ServedRows | None = None,
) -> Iterator[Callable[[int], Call]]:
    """Yield `batch_size -> call`, where `call()` runs one forward pass with fixed inputs
    (on ONNX Runtime with `served`: one call of the served graph on raw columns)."""
    if runtime == "torch":
        with evaluating(network), _torch_threads(threads), torch.inference_mode():
            yield lambda batch_size: _torch_call(network, batch_size)
        return
    with contextlib.ExitStack() as stack:
        if onnx_path is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            onnx_path = export_onnx(network, tmp / "network.onnx")
        if served is not None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            graph = compose(onnx_path, served.preprocessor)
            onnx.save(graph, str(tmp / "served.onnx"))
            onnx_path = tmp / "served.onnx"
        session = ort_session(onnx_path, threads)
        names = [node.name for node in session.get_inputs()]

        def make_ort_call(batch_size: int) -> Call:
            if served is not None:
                feeds = served.feeds(batch_size)
            else:
                arrays = [t.detach().cpu().numpy() for t in example_inputs(network, batch_size)]
                feeds = dict(zip(names, arrays, strict=True))
            return lambda: session.run(None, feeds)

        yield make_ort_call


def _torch_call(network: nn.Module, batch_size: int) -> Call:
    device = _device(network)
    inputs = inputs_on_device(network, batch_size)

    def call() -> object:
        out = network(*inputs)
        # CUDA runs asynchronously; without a sync the clock would time the launch only.
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return call
