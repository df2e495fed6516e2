"""On a GPU: device-resident batches, fits at both precisions, evaluation and CUDA latency.

Marked `gpu` and skipped without CUDA; `bench/gpu_check.sh` runs them with `-m gpu`.
"""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import pandas as pd
import pytest
import torch

from lightning_modules.data import TRAIN_BATCHES_PER_STEP, InMemoryBatches, TabularDataModule
from lightning_modules.evaluation import evaluate_network, row_scores
from lightning_modules.networks import MLPSpec, build
from lightning_modules.training import FitPrecision, FitSettings, fit, make_trainer
from search.measure import cuda_latency_ms, host_profile, measure_latency

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _flat(items: list[Any]) -> list[dict[str, torch.Tensor]]:
    return [b for item in items for b in (item if isinstance(item, list) else [item])]


@pytest.mark.parametrize(("batch_size", "per_item"), [(7, 1), (32, TRAIN_BATCHES_PER_STEP)])
def test_batches_on_the_gpu_are_the_cpu_batches(batch_size: int, per_item: int) -> None:
    tensors = {"x_num": torch.randn(500, 4), "x_cat": torch.randint(0, 9, (500, 2))}
    tensors["y"] = torch.arange(500)
    on_cpu = InMemoryBatches(tensors, batch_size, shuffle=True, seed=3, batches_per_item=per_item)
    on_gpu = InMemoryBatches(
        tensors, batch_size, shuffle=True, seed=3, batches_per_item=per_item, device="cuda"
    )
    assert on_gpu.device.type == "cuda" and len(on_gpu) == len(on_cpu)
    for _ in range(2):  # two epochs: the same CPU generator draws both orders
        cpu_batches, gpu_batches = _flat(list(on_cpu)), _flat(list(on_gpu))
        assert len(cpu_batches) == len(gpu_batches)
        for cpu, gpu in zip(cpu_batches, gpu_batches, strict=True):
            for name, value in cpu.items():
                assert gpu[name].device.type == "cuda"
                assert torch.equal(gpu[name].cpu(), value), name


def test_the_data_module_serves_batches_on_its_trainers_gpu(small_data: TabularDataModule) -> None:
    small_data.trainer = make_trainer(FitSettings(accelerator="gpu"), [])
    loader = small_data.train_dataloader()
    assert loader.device.type == "cuda"
    assert all(t.device.type == "cpu" for t in small_data.tensors["train"].values())
    small_data.trainer = None
    assert small_data.val_dataloader().device.type == "cpu"


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_a_fit_on_the_gpu_trains_and_hands_back_a_cpu_network(
    small_table: pd.DataFrame, precision: FitPrecision
) -> None:
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    data = TabularDataModule.from_frame(small_table, "label", batch_size=32)
    built: list[InMemoryBatches] = []
    make = data.train_dataloader

    def record() -> InMemoryBatches:
        built.append(make())
        return built[-1]

    data.train_dataloader = record  # type: ignore[method-assign]
    spec = MLPSpec(hidden=(32, 16), **data.network_inputs())
    settings = FitSettings(max_epochs=8, lr=5e-3, accelerator="gpu", precision=precision)
    result = fit(build(spec, seed=0), data, settings)
    # The training rows moved to the GPU once, for the whole fit.
    assert len(built) == 1 and built[0].device.type == "cuda"
    assert all(
        p.device.type == "cpu" and p.dtype == torch.float32 for p in result.network.parameters()
    )
    assert not result.network.training
    assert result.val_metrics["accuracy"] > 0.75
    assert math.isfinite(result.test_metrics["log_loss"])


def test_evaluation_works_with_a_network_left_on_the_gpu(small_data: TabularDataModule) -> None:
    network = build(MLPSpec(hidden=(16,), **small_data.network_inputs()), seed=0).eval()
    on_cpu = evaluate_network(network, small_data, "val", accelerator="cpu")
    on_gpu = evaluate_network(network.cuda(), small_data, "val", accelerator="gpu")
    assert on_gpu["accuracy"] == pytest.approx(on_cpu["accuracy"])
    assert next(network.parameters()).device.type == "cpu"  # handed back on the CPU
    # The data module was last attached to a GPU trainer; a CPU evaluation builds its loaders
    # for its own trainer, so the rows stay on the CPU.
    assert evaluate_network(network, small_data, "val", accelerator="cpu") == on_cpu
    assert small_data.trainer is not None
    assert small_data.trainer.strategy.root_device.type == "cpu"
    scores = row_scores(network.cuda(), small_data, "test")
    assert scores.shape == (len(small_data.test_frame),)


def test_cuda_latency_is_measured_and_recorded() -> None:
    network = build(MLPSpec(d_num=16, cat_cardinalities=(), hidden=(64, 64), d_out=2), seed=0)
    latency = cuda_latency_ms(network, 256)
    assert latency is not None and latency > 0
    direct = measure_latency(network.cuda(), runtime="torch", batch_size=256)
    assert direct.median_ms > 0
    assert host_profile("torch", 64, 1).gpu  # the trial attribute that names the GPU


def test_a_process_sharing_its_gpu_is_capped_at_its_share() -> None:
    # In a process of its own: pinning and the cap are per process, and this one has CUDA up.
    code = (
        "import torch; from search.cluster import Slot, pin; "
        "assert pin(Slot(0, sharing=4)) == 'gpu'; "
        "print(torch.cuda.get_per_process_memory_fraction(0))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(done.stdout.strip()) == pytest.approx(0.25)
