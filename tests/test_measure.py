from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import MLPSpec, build
from search.measure import (
    Latency,
    Timing,
    compare_latency,
    count_flops,
    count_parameters,
    export_onnx,
    measure,
    measure_latency,
    serialized_bytes,
)

NUMERIC = MLPSpec(d_num=10, d_out=3, hidden=(32, 16))
MIXED = MLPSpec(d_num=10, d_out=3, hidden=(32, 16), cat_cardinalities=(5, 4))

# Short budgets keep the file fast; the statistics tested here hold for any budget.
FAST = Timing(warmup=2, min_repeats=5, max_repeats=200, max_seconds=0.03)


def _training_flags(network: nn.Module) -> list[bool]:
    return [module.training for module in network.modules()]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    network = build(MIXED)
    return network, export_onnx(network, tmp_path_factory.mktemp("onnx") / "mixed.onnx")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # Linear 10*32+32, BatchNorm 2*32; Linear 32*16+16, BatchNorm 2*16; head 16*3+3.
        (NUMERIC, 352 + 64 + 528 + 32 + 51),
        # Embeddings 5*8+4*8 widen the first Linear's input to 10+2*8 = 26: 26*32+32.
        (MIXED, 72 + 864 + 64 + 528 + 32 + 51),
        # No BatchNorm: Linear 4*8+8, head 8*1+1.
        (MLPSpec(d_num=4, d_out=1, hidden=(8,), batch_norm=False), 40 + 9),
    ],
)
def test_count_parameters_matches_hand_count(spec: MLPSpec, expected: int) -> None:
    assert count_parameters(build(spec)) == expected


def test_serialized_bytes_grows_with_width() -> None:
    sizes = [serialized_bytes(build(NUMERIC.with_hidden((w, w)))) for w in (8, 64, 512)]
    assert sizes == sorted(sizes)
    assert len(set(sizes)) == 3
    # float32 weights dominate a wide network: at least 4 bytes each, plus little overhead.
    wide = build(NUMERIC.with_hidden((512, 512)))
    assert 4 * count_parameters(wide) <= sizes[-1] < 1.1 * 4 * count_parameters(wide)


@pytest.mark.parametrize("batch_size", [1, 8, 100])
@pytest.mark.parametrize(
    ("spec", "multiply_adds"),
    [
        # One multiply-add per weight of each Linear: 10*32 + 32*16 + 16*3.
        (NUMERIC, 320 + 512 + 48),
        # Embedding lookups cost nothing; the first Linear sees 26 inputs: 26*32 + 32*16 + 16*3.
        (MIXED, 832 + 512 + 48),
    ],
)
def test_count_flops_is_two_per_multiply_add(
    spec: MLPSpec, multiply_adds: int, batch_size: int
) -> None:
    network = build(dataclasses.replace(spec, batch_norm=False))
    assert count_flops(network, batch_size=batch_size) == 2 * multiply_adds * batch_size


@pytest.mark.parametrize("spec", [NUMERIC, MIXED], ids=["numeric", "mixed"])
def test_export_onnx_matches_torch_at_any_batch_size(spec: MLPSpec, tmp_path: Path) -> None:
    network = build(spec).eval()
    path = export_onnx(network, tmp_path / "network.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = ["x_num", "x_cat"][: 1 + bool(spec.cat_cardinalities)]
    assert [node.name for node in session.get_inputs()] == names
    assert [node.name for node in session.get_outputs()] == ["output"]
    for batch_size in (1, 7, 300):
        inputs = network.example_inputs(batch_size)
        with torch.no_grad():
            expected = network(*inputs).numpy()
        got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})[0]
        assert got.shape == (batch_size, spec.d_out)
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_export_onnx_leaves_network_unchanged(tmp_path: Path) -> None:
    network = build(MIXED).train()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    export_onnx(network, tmp_path / "network.onnx")
    assert all(_training_flags(network))
    after = network.state_dict()
    assert before.keys() == after.keys()
    # BatchNorm's running statistics would move if export ran the network in training mode.
    assert all(torch.equal(before[k], after[k]) for k in before)


class _Noisy(nn.Module):
    """Random output: torch and ONNX Runtime draw different numbers, so the check must fail."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x_num: torch.Tensor) -> torch.Tensor:
        return self.linear(x_num) + torch.rand_like(x_num[:, :2])

    def example_inputs(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch_size, 4),)


def test_export_onnx_raises_when_onnxruntime_disagrees(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="differs from torch"):
        export_onnx(_Noisy(), tmp_path / "noisy.onnx")


@pytest.mark.parametrize("batch_size", [1, 256])
@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_measure_latency_reports_the_settings_it_ran_with(
    exported: tuple[nn.Module, Path], runtime: str, batch_size: int
) -> None:
    network, path = exported
    latency = measure_latency(
        network, runtime=runtime, batch_size=batch_size, threads=1, onnx_path=path, timing=FAST
    )
    assert (latency.runtime, latency.batch_size, latency.threads) == (runtime, batch_size, 1)
    assert FAST.min_repeats <= latency.repeats <= FAST.max_repeats
    assert set(latency.to_metrics()) == {
        f"latency_{runtime}_b{batch_size}_{stat}_ms" for stat in ("median", "p10", "p90", "iqr")
    }


class _Sleeper(nn.Module):
    """A forward call of known cost: it sleeps `seconds`, which no load can make shorter."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.linear = nn.Linear(4, 2)

    def forward(self, x_num: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.linear(x_num)

    def example_inputs(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(batch_size, 4),)


def test_measure_latency_of_a_known_slow_call_is_that_call_in_milliseconds() -> None:
    latency = measure_latency(
        _Sleeper(0.002),
        runtime="torch",
        batch_size=8,
        timing=Timing(warmup=1, min_repeats=5, max_seconds=0.03),
    )
    # Every call sleeps at least 2 ms; waking up late on a loaded machine only adds to that.
    assert latency.p10_ms >= 1.95
    assert latency.median_ms < 10
    assert latency.iqr_ms < 5


@pytest.mark.parametrize(
    ("min_repeats", "max_repeats", "max_seconds", "fewest", "most"),
    [
        (3, 5, 10.0, 5, 5),  # max_repeats stops long before the budget is spent
        (8, 100, 0.0, 8, 8),  # min_repeats even when there is no budget at all
        # The budget: 2 ms calls fill 30 ms after at most 15, and at least 3 calls always run.
        (3, 1000, 0.03, 3, 15),
    ],
)
def test_measure_latency_repeats_obey_the_counts_and_the_time_budget(
    min_repeats: int, max_repeats: int, max_seconds: float, fewest: int, most: int
) -> None:
    latency = measure_latency(
        _Sleeper(0.002),
        runtime="torch",
        batch_size=1,
        timing=Timing(
            warmup=1, min_repeats=min_repeats, max_repeats=max_repeats, max_seconds=max_seconds
        ),
    )
    assert fewest <= latency.repeats <= most


def test_measure_latency_sees_a_much_wider_network_at_a_large_batch() -> None:
    # At batch 1024, 512x512 hidden layers cost ~1600x the multiply-adds of 8x8 ones; measured
    # apart, the median comes out ~100x larger, so a factor of 5 leaves room for any load.
    wide, narrow = (
        measure_latency(
            build(NUMERIC.with_hidden((width, width))),
            runtime="torch",
            batch_size=1024,
            timing=FAST,
        )
        for width in (512, 8)
    )
    assert wide.median_ms > 5 * narrow.median_ms


def test_measure_latency_restores_modes_and_threads() -> None:
    network = build(MIXED).train()
    network.blocks[0].eval()  # a caller's frozen part must stay as it was
    flags = _training_flags(network)
    threads = torch.get_num_threads()
    other = 2 if threads == 1 else 1
    for runtime in ("torch", "onnxruntime"):
        measure_latency(network, runtime=runtime, batch_size=4, threads=other, timing=FAST)
    count_flops(network, batch_size=4)
    assert _training_flags(network) == flags
    assert torch.get_num_threads() == threads


def test_latency_metric_names() -> None:
    latency = Latency(
        runtime="onnxruntime",
        batch_size=1024,
        median_ms=2.0,
        p10_ms=1.5,
        p90_ms=3.0,
        iqr_ms=0.5,
        repeats=50,
        threads=1,
    )
    assert latency.to_metrics() == {
        "latency_onnxruntime_b1024_median_ms": 2.0,
        "latency_onnxruntime_b1024_p10_ms": 1.5,
        "latency_onnxruntime_b1024_p90_ms": 3.0,
        "latency_onnxruntime_b1024_iqr_ms": 0.5,
    }


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_compare_latency_of_a_network_with_itself_is_near_one(runtime: str) -> None:
    network = build(NUMERIC)
    ratio = compare_latency(
        network, network, runtime=runtime, batch_size=64, rounds=20, max_seconds=0.2
    )
    # Identical networks: 1 lies within the spread of the per-round ratios. On a loaded machine
    # the median alone strayed to 0.45 once (p10 0.19, p90 5.4), so it is not asserted alone.
    assert ratio.p10 <= 1.0 <= ratio.p90 or 0.8 < ratio.median < 1.25
    assert 5 <= ratio.rounds <= 20
    # One call of a tiny network is far shorter than the ~2 ms a timed block should last.
    assert ratio.calls_per_round[0] > 1 and ratio.calls_per_round[1] > 1
    assert set(ratio.to_metrics()) == {
        f"latency_ratio_{runtime}_b64_median",
        f"latency_ratio_{runtime}_b64_p10",
        f"latency_ratio_{runtime}_b64_p90",
    }


@pytest.mark.parametrize("wide_is_candidate", [True, False])
def test_compare_latency_sees_a_much_wider_network(wide_is_candidate: bool) -> None:
    # At batch 1024, 1024x1024 hidden layers cost ~100x the multiply-adds of 8x8 ones, so the
    # ratio is far from 1 however noisy the machine; the asserts leave a wide margin.
    wide = build(NUMERIC.with_hidden((1024, 1024)))
    narrow = build(NUMERIC.with_hidden((8, 8)))
    pair = (wide, narrow) if wide_is_candidate else (narrow, wide)
    ratio = compare_latency(*pair, runtime="torch", batch_size=1024, max_seconds=0.2)
    if wide_is_candidate:
        assert ratio.median > 2.0
        assert ratio.candidate_ms > ratio.reference_ms
    else:
        assert ratio.median < 0.5
        assert ratio.candidate_ms < ratio.reference_ms


def test_compare_latency_of_known_slow_calls_is_their_ratio() -> None:
    ratio = compare_latency(
        _Sleeper(0.003), _Sleeper(0.006), runtime="torch", batch_size=1, max_seconds=0.1
    )
    # Calls that long are timed one per block; sleeping late adds to both, pulling 0.5 up a bit.
    assert ratio.calls_per_round == (1, 1)
    assert 0.3 < ratio.median < 0.8
    assert 2.95 <= ratio.candidate_ms < 15 and 5.95 <= ratio.reference_ms < 20


@pytest.mark.parametrize(
    ("runtimes", "batch_sizes"),
    [(("torch", "onnxruntime"), (1, 32)), (("torch",), (64, 1))],
    ids=["both", "torch-only"],
)
def test_measure_reports_every_metric_per_runtime_and_batch_size_asked_for(
    runtimes: tuple[str, ...], batch_sizes: tuple[int, ...]
) -> None:
    network = build(MIXED)
    result = measure(network, batch_sizes=batch_sizes, runtimes=runtimes, threads=1, timing=FAST)
    asked = [(runtime, batch) for runtime in runtimes for batch in batch_sizes]
    assert [(lat.runtime, lat.batch_size) for lat in result.latencies] == asked
    assert all(lat.threads == 1 for lat in result.latencies)
    metrics = result.to_metrics()
    assert set(metrics) == {"parameters", "size_bytes", "flops"} | {
        f"latency_{runtime}_b{batch}_{stat}_ms"
        for runtime, batch in asked
        for stat in ("median", "p10", "p90", "iqr")
    }
    assert metrics["parameters"] == count_parameters(network)
    assert metrics["size_bytes"] == serialized_bytes(network)
    assert metrics["flops"] == count_flops(network, batch_size=1)
    # Each latency's figures land under its own runtime and batch size.
    for lat in result.latencies:
        key = f"latency_{lat.runtime}_b{lat.batch_size}"
        assert metrics[f"{key}_median_ms"] == lat.median_ms
        assert metrics[f"{key}_iqr_ms"] == lat.iqr_ms


RUNTIME_MESSAGE = re.escape("runtime must be one of ['onnxruntime', 'torch'], but got runtime='tf'")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda n: measure_latency(n, runtime="tf", batch_size=1), RUNTIME_MESSAGE),
        (lambda n: measure_latency(n, runtime="torch", batch_size=0), "batch_size=0"),
        (lambda n: measure_latency(n, runtime="torch", batch_size=1, threads=0), "threads=0"),
        (lambda n: compare_latency(n, n, runtime="tf", batch_size=1), RUNTIME_MESSAGE),
        (lambda n: compare_latency(n, n, runtime="torch", batch_size=-1), "batch_size=-1"),
        (lambda n: measure(n, runtimes=("torch", "tf")), RUNTIME_MESSAGE),
        (lambda n: measure(n, batch_sizes=(1, 0)), "batch_size=0"),
        (lambda n: measure(n, batch_sizes=()), "batch_sizes"),
        (lambda n: count_flops(n, batch_size=0), "batch_size=0"),
    ],
)
def test_bad_arguments_raise_input_error(call: Callable[[nn.Module], object], message: str) -> None:
    with pytest.raises(TabslimInputError, match=message):
        call(build(NUMERIC))


@pytest.mark.parametrize(("slow_seconds", "repeats"), [(0.001, 3), (1.0, 10)])
def test_a_call_slower_than_slow_seconds_is_timed_three_times(
    slow_seconds: float, repeats: int
) -> None:
    # A 2 ms call: "slow" under a 1 ms bound, not under 1 s. No budget, so the floor decides.
    timing = Timing(warmup=5, min_repeats=10, max_repeats=100, max_seconds=0.0)
    latency = measure_latency(
        _Sleeper(0.002),
        runtime="torch",
        batch_size=1,
        timing=dataclasses.replace(timing, slow_seconds=slow_seconds),
    )
    assert latency.repeats == repeats
