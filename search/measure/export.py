"""ONNX export of a network, checked against torch in ONNX Runtime before it is used.

Any `nn.Module` with an `example_inputs(batch_size)` method can be exported; the inputs it
returns are `(x_num,)` or `(x_num, x_cat)`, and the exported graph names them so.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

INPUT_NAMES: tuple[str, ...] = ("x_num", "x_cat")
OUTPUT_NAME = "output"

# Export traces at batch 2: torch.export specialises dimensions of size 0 and 1, so a batch of 1
# would freeze the batch dimension. The check runs at another size to prove it stayed dynamic.
_EXPORT_BATCH = 2
_CHECK_BATCH = 3


def example_inputs(network: nn.Module, batch_size: int) -> tuple[torch.Tensor, ...]:
    """The network's own example inputs at `batch_size`, on the CPU."""
    make = getattr(network, "example_inputs", None)
    if make is None:
        raise TypeError(f"{type(network).__name__} has no example_inputs(batch_size) method")
    return tuple(make(batch_size))


def input_names(count: int) -> tuple[str, ...]:
    if not 1 <= count <= len(INPUT_NAMES):
        raise TypeError(f"expected inputs {INPUT_NAMES} or a prefix of them, but got {count}")
    return INPUT_NAMES[:count]


Exporter = Literal["torchscript", "dynamo"]


def export_onnx(
    network: nn.Module, path: str | Path, *, atol: float = 1e-4, exporter: Exporter = "torchscript"
) -> Path:
    """Export a CPU copy of `network` in eval mode to ONNX with a dynamic batch dimension.

    Inputs are named `x_num` (and `x_cat`), the output `output`. The file is run once in
    ONNX Runtime and compared with torch; the caller's module is never touched.

    Args:
        exporter: "torchscript" traces the module (about 10 ms for the default MLP here);
            "dynamo" goes through torch.export (0.6-1.7 s), which a search cannot afford per
            trial. Tracing suits these networks, whose forward has no data-dependent control
            flow; if it fails, the dynamo exporter is tried. Either way the file is verified.

    Raises:
        RuntimeError: ONNX Runtime's output differs from torch's by more than `atol`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A deep copy, because export and `.cpu()` would otherwise move or re-mode the caller's
    # module; ONNX Runtime here runs on the CPU provider, so the graph is exported from CPU.
    model = copy.deepcopy(network).cpu().eval()
    inputs = example_inputs(model, _EXPORT_BATCH)
    names = input_names(len(inputs))
    with _quiet_export():
        if exporter == "torchscript":
            try:
                _export_traced(model, inputs, names, path)
            except Exception:  # noqa: BLE001 - any tracing failure: the general exporter next
                _export_dynamo(model, inputs, names, path)
        else:
            _export_dynamo(model, inputs, names, path)
    verify_onnx(model, path, atol=atol)
    return path


def _export_traced(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], names: tuple[str, ...], path: Path
) -> None:
    torch.onnx.export(
        model,
        inputs,
        str(path),
        dynamo=False,
        input_names=list(names),
        output_names=[OUTPUT_NAME],
        dynamic_axes={name: {0: "batch"} for name in (*names, OUTPUT_NAME)},
        opset_version=18,
    )


def _export_dynamo(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], names: tuple[str, ...], path: Path
) -> None:
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        model,
        inputs,
        str(path),
        dynamo=True,
        input_names=list(names),
        output_names=[OUTPUT_NAME],
        dynamic_shapes=tuple({0: batch} for _ in inputs),
        verbose=False,
        report=False,
    )


def verify_onnx(
    network: nn.Module, path: str | Path, *, atol: float = 1e-4, rtol: float = 1e-4
) -> None:
    """Run the exported file in ONNX Runtime beside torch at a fresh batch size; raise if apart.

    Relative as well as absolute: an autoencoder's outputs are inputs' values, whose float32
    rounding grows with their size.
    """
    import onnxruntime as ort

    model = network.cpu().eval()
    check = example_inputs(model, _CHECK_BATCH)
    names = input_names(len(check))
    with torch.inference_mode():
        expected = model(*check).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, dict(zip(names, (t.numpy() for t in check), strict=True)))[0]
    if got.shape != expected.shape or not np.allclose(got, expected, atol=atol, rtol=rtol):
        difference = (
            float(np.max(np.abs(got - expected))) if got.shape == expected.shape else math.inf
        )
        raise RuntimeError(
            f"ONNX export of {type(network).__name__} differs from torch: shape {got.shape} vs "
            f"{expected.shape}, max abs difference {difference:.3g} beyond atol={atol}, "
            f"rtol={rtol}"
        )


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
