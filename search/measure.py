"""Size, FLOPs and latency of a network, on eager torch and on ONNX Runtime.

Any `nn.Module` with an `example_inputs(batch_size)` method can be measured; the inputs it
returns are `(x_num,)` or `(x_num, x_cat)`, and the exported ONNX graph names them so.

Absolute latencies on shared, noisy machines drift from minute to minute, so a trial's speed-up
should come from `compare_latency`, which interleaves candidate and reference and reports the
ratio; `measure_latency` gives absolute figures for people to read in MLflow.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import count_parameters

RUNTIMES: tuple[str, ...] = ("onnxruntime", "torch")
INPUT_NAMES: tuple[str, ...] = ("x_num", "x_cat")
OUTPUT_NAME = "output"

# Export traces at batch 2: torch.export specialises dimensions of size 0 and 1, so a batch of 1
# would freeze the batch dimension. The check runs at another size to prove it stayed dynamic.
_EXPORT_BATCH = 2
_CHECK_BATCH = 3


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
class Measurement:
    """Everything `measure` finds about one network; FLOPs are per single row (batch 1)."""

    parameters: int
    size_bytes: int
    flops: int
    latencies: tuple[Latency, ...]

    def to_metrics(self) -> dict[str, float]:
        """Flat `name -> value` for MLflow's `log_metrics`."""
        metrics = {
            "parameters": float(self.parameters),
            "size_bytes": float(self.size_bytes),
            "flops": float(self.flops),
        }
        for latency in self.latencies:
            metrics.update(latency.to_metrics())
        return metrics


def serialized_bytes(network: nn.Module) -> int:
    """Bytes of the `state_dict` as `torch.save` writes it, BatchNorm buffers included."""
    buffer = io.BytesIO()
    torch.save(network.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def count_flops(network: nn.Module, batch_size: int = 1) -> int:
    """FLOPs of one forward pass at `batch_size`, in eval mode.

    torch's `FlopCounterMode` counts matrix products and convolutions (2 per multiply-add);
    embeddings, normalisation and activations count zero, which is negligible for an MLP.
    """
    _check_positive(batch_size=batch_size)
    inputs = _inputs_on_device(network, batch_size)
    counter = FlopCounterMode(display=False)
    with _eval_mode(network), torch.inference_mode(), counter:
        network(*inputs)
    return int(counter.get_total_flops())


def export_onnx(network: nn.Module, path: str | Path, *, atol: float = 1e-4) -> Path:
    """Export a CPU copy of `network` in eval mode to ONNX with a dynamic batch dimension.

    Inputs are named `x_num` (and `x_cat`), the output `output`. The file is run once in
    ONNX Runtime and compared with torch; the caller's module is never touched.

    Raises:
        RuntimeError: ONNX Runtime's output differs from torch's by more than `atol`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A deep copy, because export and `.cpu()` would otherwise move or re-mode the caller's
    # module; ONNX Runtime here runs on the CPU provider, so the graph is exported from CPU.
    model = copy.deepcopy(network).cpu().eval()
    inputs = _example_inputs(model, _EXPORT_BATCH)
    names = _input_names(len(inputs))
    batch = torch.export.Dim("batch")
    dynamic_shapes = tuple({0: batch} for _ in inputs)
    with _quiet_export():
        torch.onnx.export(
            model,
            inputs,
            str(path),
            dynamo=True,
            input_names=list(names),
            output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic_shapes,
            verbose=False,
            report=False,
        )

    check = _example_inputs(model, _CHECK_BATCH)
    with torch.inference_mode():
        expected = model(*check).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, dict(zip(names, (t.numpy() for t in check), strict=True)))[0]
    if got.shape != expected.shape or not np.allclose(got, expected, atol=atol):
        difference = (
            float(np.max(np.abs(got - expected))) if got.shape == expected.shape else math.inf
        )
        raise RuntimeError(
            f"ONNX export of {type(network).__name__} differs from torch: shape {got.shape} vs "
            f"{expected.shape}, max abs difference {difference:.3g} > atol={atol}"
        )
    return path


def measure_latency(
    network: nn.Module,
    *,
    runtime: str,
    batch_size: int,
    threads: int = 1,
    warmup: int = 5,
    min_repeats: int = 10,
    max_repeats: int = 500,
    max_seconds: float = 0.25,
    onnx_path: str | Path | None = None,
) -> Latency:
    """Time single forward calls of `network` on `runtime` with a fixed thread count.

    Timing stops after `max_repeats` calls or, once `min_repeats` are in, after `max_seconds`.

    Args:
        runtime: "torch" (eager, on the device of the network's parameters, eval mode,
            inference mode) or "onnxruntime" (CPU provider, all graph optimisations).
        onnx_path: an export of this network to reuse; without it the network is exported to
            a temporary file first, which takes about a second.
    """
    _check_runtime(runtime)
    _check_positive(batch_size=batch_size, threads=threads, warmup=warmup, min_repeats=min_repeats)
    _check_budget(min_repeats=min_repeats, max_repeats=max_repeats, max_seconds=max_seconds)
    with _runner(network, runtime, threads, onnx_path) as make_call:
        call = make_call(batch_size)
        for _ in range(warmup):
            call()
        samples = _time_calls(call, min_repeats, max_repeats, max_seconds)
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
    _check_runtime(runtime)
    _check_positive(batch_size=batch_size, threads=threads, warmup=warmup, min_rounds=min_rounds)
    _check_budget(min_repeats=min_rounds, max_repeats=rounds, max_seconds=max_seconds)
    if calls_per_round is not None:
        _check_positive(calls_per_round=calls_per_round)

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        calls: list[Callable[[], object]] = []
        for name, network in (("candidate", candidate), ("reference", reference)):
            onnx_path = (
                export_onnx(network, tmp / f"{name}.onnx") if runtime == "onnxruntime" else None
            )
            make_call = stack.enter_context(_runner(network, runtime, threads, onnx_path))
            calls.append(make_call(batch_size))

        # Warm-up doubles as calibration: the fastest warm-up call of each is its typical cost.
        single_ns = [min(_time_calls(call, warmup, warmup, 0.0)) for call in calls]
        blocks = (
            (_block_size(single_ns[0]), _block_size(single_ns[1]))
            if calls_per_round is None
            else (calls_per_round, calls_per_round)
        )

        ratios: list[float] = []
        per_call_ns: tuple[list[float], list[float]] = ([], [])
        start = time.perf_counter_ns()
        for i in range(rounds):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            for which in order:
                per_call_ns[which].append(_time_block(calls[which], blocks[which]) / blocks[which])
            ratios.append(per_call_ns[0][-1] / max(per_call_ns[1][-1], 1.0))
            spent = (time.perf_counter_ns() - start) / 1e9
            if i + 1 >= min_rounds and spent >= max_seconds:
                break

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


def measure(
    network: nn.Module,
    *,
    batch_sizes: Sequence[int] = (1, 1024),
    runtimes: Sequence[str] = ("torch", "onnxruntime"),
    threads: int = 1,
    warmup: int = 5,
    min_repeats: int = 10,
    max_repeats: int = 500,
    max_seconds: float = 0.25,
) -> Measurement:
    """Parameters, serialized size, FLOPs at batch 1, and latency per runtime and batch size.

    The network is exported to ONNX once (about a second) and the file reused for every batch
    size. `warmup`, `min_repeats`, `max_repeats` and `max_seconds` apply to each latency.
    """
    for runtime in runtimes:
        _check_runtime(runtime)
    if not batch_sizes:
        raise TabslimInputError("batch_sizes must name at least one batch size, but got none")
    for batch_size in batch_sizes:
        _check_positive(batch_size=batch_size)
    _check_positive(threads=threads, warmup=warmup, min_repeats=min_repeats)
    _check_budget(min_repeats=min_repeats, max_repeats=max_repeats, max_seconds=max_seconds)

    latencies: list[Latency] = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = (
            export_onnx(network, Path(tmp) / "network.onnx") if "onnxruntime" in runtimes else None
        )
        for runtime in runtimes:
            for batch_size in batch_sizes:
                latencies.append(
                    measure_latency(
                        network,
                        runtime=runtime,
                        batch_size=batch_size,
                        threads=threads,
                        warmup=warmup,
                        min_repeats=min_repeats,
                        max_repeats=max_repeats,
                        max_seconds=max_seconds,
                        onnx_path=onnx_path,
                    )
                )
    return Measurement(
        parameters=count_parameters(network),
        size_bytes=serialized_bytes(network),
        flops=count_flops(network, batch_size=1),
        latencies=tuple(latencies),
    )


# ---------------------------------------------------------------------------------------------
# Helpers


def _check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise TabslimInputError(f"runtime must be one of {sorted(RUNTIMES)}, but got {runtime=}")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise TabslimInputError(f"{name} must be at least 1, but got {name}={value!r}")


def _check_budget(*, min_repeats: int, max_repeats: int, max_seconds: float) -> None:
    if max_repeats < min_repeats:
        raise TabslimInputError(
            f"the most repeats must be at least the fewest, but got {max_repeats=} "
            f"and {min_repeats=}"
        )
    if not max_seconds >= 0:
        raise TabslimInputError(f"max_seconds must be at least 0, but got {max_seconds=}")


def _example_inputs(network: nn.Module, batch_size: int) -> tuple[torch.Tensor, ...]:
    make = getattr(network, "example_inputs", None)
    if make is None:
        raise TypeError(f"{type(network).__name__} has no example_inputs(batch_size) method")
    return tuple(make(batch_size))


def _input_names(count: int) -> tuple[str, ...]:
    if not 1 <= count <= len(INPUT_NAMES):
        raise TypeError(f"expected inputs {INPUT_NAMES} or a prefix of them, but got {count}")
    return INPUT_NAMES[:count]


def _device(network: nn.Module) -> torch.device:
    parameter = next(network.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _inputs_on_device(network: nn.Module, batch_size: int) -> tuple[torch.Tensor, ...]:
    device = _device(network)
    return tuple(t.to(device) for t in _example_inputs(network, batch_size))


@contextlib.contextmanager
def _eval_mode(network: nn.Module) -> Iterator[None]:
    # Flags are saved per module because a caller may have frozen some parts in eval mode;
    # `network.train(previous)` would flip them all alike.
    flags = [(module, module.training) for module in network.modules()]
    network.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    # The dynamo exporter logs a warning per missing optional package (torchvision) and warns
    # about deprecated pytree internals; neither concerns the exported MLP.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _ort_session(path: str | Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # One graph, run sequentially: a second pool of inter-op threads would only compete.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def _runner(
    network: nn.Module, runtime: str, threads: int, onnx_path: str | Path | None
) -> Iterator[Callable[[int], Callable[[], object]]]:
    """Yield `batch_size -> call`, where `call()` runs one forward pass with fixed inputs."""
    if runtime == "torch":
        device = _device(network)
        synchronize = device.type == "cuda"

        def make_torch_call(batch_size: int) -> Callable[[], object]:
            inputs = _inputs_on_device(network, batch_size)

            def call() -> object:
                out = network(*inputs)
                # CUDA runs asynchronously; without a sync the clock would time the launch only.
                if synchronize:
                    torch.cuda.synchronize(device)
                return out

            return call

        with _eval_mode(network), _torch_threads(threads), torch.inference_mode():
            yield make_torch_call
        return

    with contextlib.ExitStack() as stack:
        if onnx_path is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            onnx_path = export_onnx(network, tmp / "network.onnx")
        session = _ort_session(onnx_path, threads)
        names = [node.name for node in session.get_inputs()]

        def make_ort_call(batch_size: int) -> Callable[[], object]:
            arrays = [t.detach().cpu().numpy() for t in _example_inputs(network, batch_size)]
            feeds = dict(zip(names, arrays, strict=True))
            return lambda: session.run(None, feeds)

        yield make_ort_call


def _time_calls(
    call: Callable[[], object], min_repeats: int, max_repeats: int, max_seconds: float
) -> list[int]:
    """Nanoseconds per call, until `max_repeats`, or `max_seconds` once `min_repeats` are in."""
    budget_ns = max_seconds * 1e9
    samples: list[int] = []
    start = time.perf_counter_ns()
    while len(samples) < max_repeats:
        before = time.perf_counter_ns()
        call()
        after = time.perf_counter_ns()
        samples.append(after - before)
        if len(samples) >= min_repeats and after - start >= budget_ns:
            break
    return samples


def _time_block(call: Callable[[], object], calls: int) -> int:
    start = time.perf_counter_ns()
    for _ in range(calls):
        call()
    return time.perf_counter_ns() - start


def _block_size(single_ns: float) -> int:
    # A block of ~2 ms is long next to the clock's and the loop's overhead, and short next to
    # the drift of the machine's load, so both blocks of a round see the same load.
    return max(1, min(math.ceil(2e6 / max(single_ns, 1.0)), 1000))
