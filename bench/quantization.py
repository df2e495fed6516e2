"""INT8 against fp32 on ONNX Runtime, for networks of the sizes a search's front holds.

Per bundled dataset, the product's default baseline (MLP 256-256-128) and the uniform ladder
shapes (x0.5, x0.25, x0.125) are trained from scratch with the default training settings, exported
with the product's `export_onnx` (fp32, verified against torch), and quantized with ONNX Runtime:

- dynamic: `quantize_dynamic`, int8 weights, activations quantized per call;
- static QDQ: `quantize_static`, calibrated (min-max) on 512 training rows.

Both with `reduce_range` on CPUs without VNNI, as the product does.

Figures: serialized ONNX bytes; the test metric of each (accuracy) and its change against fp32;
latency as int8 / fp32 ratio, interleaved in one run (`search.measure.latency.compare_latency`'s
approach: alternating blocks, median of per-round ratios) at batch 1 and 1024 on 1 thread.
A test-accuracy change of one row (0.37 points on digits, 1.2 on breast_cancer) is noise.

Run: `.venv/bin/python bench/quantization.py [--datasets digits,breast_cancer]`. It prints a
markdown table; it asserts nothing. The quantizer is the product's (`search.front.quantize`,
which a search applies to every front member); the rest of the measurement is this script's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import onnxruntime as ort  # noqa: E402

from lightning_modules.data import TabularDataModule  # noqa: E402
from lightning_modules.networks import MLP, MLPSpec, build  # noqa: E402
from lightning_modules.training import FitSettings, fit, quiet_lightning  # noqa: E402
from search.front import quantize
from search.measure import export_onnx, ort_session

SHAPES = {"baseline": 1.0, "x0.5": 0.5, "x0.25": 0.25, "x0.125": 0.125}
SETTINGS = FitSettings(max_epochs=40, lr=2e-3, weight_decay=1e-4, patience=8, accelerator="cpu")


def _feeds(session: ort.InferenceSession, tensors: dict[str, torch.Tensor]) -> dict:
    names = [node.name for node in session.get_inputs()]
    return {name: tensors[name].numpy() for name in names}


def _accuracy(path: Path, data: TabularDataModule) -> float:
    session = ort_session(path, 1)
    tensors = data.tensors["test"]
    output = session.run(None, _feeds(session, tensors))[0]
    return float((output.argmax(axis=1) == tensors["y"].numpy()).mean())


def _call(path: Path, network: MLP, batch: int) -> Callable[[], object]:
    session = ort_session(path, 1)
    inputs = dict(zip(("x_num", "x_cat"), network.example_inputs(batch), strict=False))
    feeds = _feeds(session, inputs)
    return lambda: session.run(None, feeds)


def _ratio(candidate: Callable[[], object], reference: Callable[[], object], calls: int) -> float:
    """Median over rounds of candidate / reference time, alternating which goes first."""
    for call in (candidate, reference):
        for _ in range(3):
            call()
    ratios = []
    for i in range(30):
        times = []
        for call in (candidate, reference) if i % 2 == 0 else (reference, candidate):
            started = time.perf_counter_ns()
            for _ in range(calls):
                call()
            times.append(time.perf_counter_ns() - started)
        first, second = times
        ratios.append(first / second if i % 2 == 0 else second / first)
    return statistics.median(ratios)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="digits,breast_cancer")
    args = parser.parse_args(argv)
    quiet_lightning()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for dataset in args.datasets.split(","):
            data = TabularDataModule.from_bundled(dataset, batch_size=128, seed=0)
            for name, multiplier in SHAPES.items():
                hidden = tuple(max(1, round(w * multiplier)) for w in (256, 256, 128))
                spec = MLPSpec(hidden=hidden, **data.network_inputs())
                network = fit(build(spec, seed=0), data, SETTINGS).network
                assert isinstance(network, MLP)
                fp32 = export_onnx(network, folder / f"{dataset}-{name}.onnx")
                # The product's quantizer (search/front/quantized.py), as a search's front gets it.
                dynamic = quantize(fp32, folder / f"{dataset}-{name}-dynamic.onnx",
                                   "int8_dynamic", data.tensors["train"])  # fmt: skip
                static = quantize(fp32, folder / f"{dataset}-{name}-static.onnx",
                                  "int8_static", data.tensors["train"])  # fmt: skip
                base_accuracy = _accuracy(fp32, data)
                for label, path in (("dynamic", dynamic), ("static QDQ", static)):
                    accuracy = _accuracy(path, data)
                    latency = [
                        _ratio(_call(path, network, b), _call(fp32, network, b), calls)
                        for b, calls in ((1, 200), (1024, 5))
                    ]
                    rows.append(
                        f"| {dataset} | {'-'.join(map(str, hidden))} | {label} | "
                        f"{fp32.stat().st_size:,} | {path.stat().st_size:,} | "
                        f"{base_accuracy:.4f} | {accuracy:.4f} | {accuracy - base_accuracy:+.4f} | "
                        f"{latency[0]:.2f} | {latency[1]:.2f} |"
                    )
            print(f"  {dataset}: {time.perf_counter() - started:.0f} s", flush=True)
    print(
        "| dataset | widths | int8 | fp32 bytes | int8 bytes | fp32 test acc | int8 test acc | "
        "change | latency int8/fp32, batch 1 | batch 1024 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\n{time.perf_counter() - started:.0f} s in all; onnxruntime {ort.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
