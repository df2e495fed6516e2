"""INT8 front members: post-training quantization of each fp32 front member's ONNX graph.

For every fp32 member of the front, and every precision in `search.quantize`, ONNX Runtime makes
a quantized copy of the member's verified ONNX graph:
- `int8_dynamic`: `quantize_dynamic`, int8 weights; activations are quantized per call from
  that call's own range, so a row's output depends on the other rows of its batch;
- `int8_static`: `quantize_static` in QDQ format, int8 weights and activations, calibrated
  (min-max) on training rows, so outputs do not depend on the batch.

Each variant is measured like a trial (validation and test metrics from ONNX Runtime's
outputs, paired deltas against the baseline on the same rows, size, the latency objective)
and added to the study as a finished trial of its own: approach `quantize`, a `precision`
attribute and `variant_of` (its source). So the front, the report, the plots, MLflow and the
champion see it like any trial, and the model logged for it serves the INT8 graph.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from lightning_modules.data import TabularDataModule
from lightning_modules.evaluation import output_metrics, output_row_scores
from search.cluster import digests, fetch
from search.front import pareto
from search.inputs import run_metrics
from search.measure import (
    Measurement,
    Timing,
    count_flops,
    export_onnx,
    measure_latency,
    ort_session,
    paired_delta,
)
from search.serving import load_network
from search.study import (
    ROWS_FILE,
    SearchContext,
    StudySettings,
    attributes,
    is_variant,
    paired_metrics,
    scored_splits,
)

# Rows of the training split that calibrate static quantization's activation ranges.
CALIBRATION_ROWS = 512


def quantize_front(study: optuna.Study, ctx: SearchContext) -> list[int]:
    """Add the missing INT8 variants of every fp32 front member; returns their trial numbers."""
    precisions = list(ctx.config.search.quantize)
    if not precisions:
        return []
    settings = StudySettings.read(study)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    done = {(attributes.variant_of(t), attributes.precision(t)) for t in complete if is_variant(t)}
    added = []
    for member in pareto.front(study):
        if is_variant(member):
            continue
        wanted = [p for p in precisions if (member.number, p) not in done]
        if not wanted:
            continue
        source = attributes.repeat_of(member)
        source = member.number if source is None else source
        directory = fetch(study, source, ctx.trials_dir, ctx.remote)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            _, network, _ = load_network(directory)
            fp32 = export_onnx(network, folder / "fp32.onnx")
            for precision in wanted:
                variant = folder / precision
                shutil.copytree(directory, variant)
                quantize(fp32, variant / "model.onnx", precision, ctx.data.tensors["train"])
                added.append(
                    _add_variant(study, ctx, settings, member, network, variant, precision)
                )
    return added


def quantize(
    fp32: Path, target: Path, precision: str, calibration: dict[str, torch.Tensor]
) -> Path:
    """Write the `precision` copy of the fp32 graph `fp32` to `target`.

    Args:
        calibration: training tensors by input name (`x_num`, `x_cat`); static quantization
            calibrates on their first `CALIBRATION_ROWS` rows.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    # Without VNNI, x86's int8 multiply-add can saturate on full-range weights; 7-bit weights
    # avoid that at a little precision (ONNX Runtime's advice for such CPUs).
    reduce_range = not has_vnni()
    with _quiet():
        if precision == "int8_dynamic":
            quantize_dynamic(
                str(fp32), str(target), weight_type=QuantType.QInt8, reduce_range=reduce_range
            )
        else:
            session = ort_session(fp32, 1)
            names = [node.name for node in session.get_inputs()]
            feeds = {name: calibration[name][:CALIBRATION_ROWS].numpy() for name in names}
            quantize_static(
                str(fp32),
                str(target),
                _one_batch(feeds),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                reduce_range=reduce_range,
            )
    return target


def has_vnni(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has VNNI int8 dot products (AVX512-VNNI or AVX-VNNI), or is not x86.

    Reads /proc/cpuinfo on Linux; elsewhere it assumes VNNI (ARM's int8 dot products do not
    saturate the way x86's pmaddubsw does).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return True
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    if flags is None:
        return True
    names = set(flags.split(":", 1)[-1].split())
    return bool(names & {"avx512_vnni", "avx_vnni"})


def onnx_outputs(path: Path, ctx: SearchContext, split: str) -> torch.Tensor:
    """The graph's outputs for every row of `split`, in one call (as the metrics see them)."""
    return graph_outputs(path, ctx.data, split, ctx.config.measure.threads)


def graph_outputs(path: Path, data: TabularDataModule, split: str, threads: int) -> torch.Tensor:
    """The ONNX graph's outputs for every row of `data`'s `split`, in one call."""
    session = ort_session(path, threads)
    tensors = data.tensors[split]
    names = [node.name for node in session.get_inputs()]
    output = session.run(None, {name: tensors[name].numpy() for name in names})[0]
    return torch.from_numpy(np.asarray(output, dtype=np.float32))


def _add_variant(
    study: optuna.Study,
    ctx: SearchContext,
    settings: StudySettings,
    member: optuna.trial.FrozenTrial,
    network: Any,
    folder: Path,
    precision: str,
) -> int:
    """Measure the `precision` copy in `folder` of `member` and add it as a finished trial of
    the study, with its files beside the other trials'; returns its number."""
    metrics = _variant_metrics(study, ctx, settings, member, network, folder)
    value = _judged_with_source(metrics[f"val_{ctx.metric}"], member.values[0], settings)
    attrs = attributes.variant_attrs(member, precision, metrics, digests(folder))
    values = [value, metrics[settings.size], metrics[settings.latency]]
    study.add_trial(
        optuna.trial.create_trial(
            values=values,
            user_attrs=attrs,
            constraints={"metric_floor": settings.violation(value)},
        )
    )
    number = next(
        t.number
        for t in study.get_trials(deepcopy=False)
        if attributes.variant_of(t) == member.number and attributes.precision(t) == precision
    )
    target = ctx.trials_dir / f"trial-{number}"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(folder, target)
    if ctx.remote is not None:
        ctx.remote.upload(target, number)
    return number


def _variant_metrics(
    study: optuna.Study,
    ctx: SearchContext,
    settings: StudySettings,
    member: optuna.trial.FrozenTrial,
    network: Any,
    folder: Path,
) -> dict[str, float]:
    """The copy's metrics, latency and paired deltas (to the baseline and to its source),
    measured on its own graph; its row scores replace its source's in `folder`."""
    graph = folder / "model.onnx"
    with np.load(folder / ROWS_FILE) as stored:  # still the source's: the folder is its copy
        source_rows = stored["val"]
    # The copy's own graph on every scored split: it is certified, and its estimators are
    # calibrated, on its own outputs, not its source's.
    scored = scored_splits(ctx)
    outputs = {split: onnx_outputs(graph, ctx, split) for split in scored}
    rows = {split: output_row_scores(outputs[split], ctx.data, split) for split in scored}
    np.savez(folder / ROWS_FILE, **rows)  # type: ignore[arg-type]
    latency = ctx.config.search.latency
    timed = measure_latency(
        network,
        runtime="onnxruntime",
        batch_size=latency.batch_size,
        threads=ctx.config.measure.threads,
        timing=Timing(max_seconds=latency.seconds),
        onnx_path=graph,
        # As for every trial: the INT8 network inside the served graph, on raw rows.
        served=ctx.served_rows(),
    )
    measured = Measurement(
        parameters=int(attributes.trial_metrics(member)["parameters"]),
        size_bytes=graph.stat().st_size,  # the INT8 graph: what serves it
        flops=count_flops(network),
        latencies=(timed,),
    )
    metrics = run_metrics(
        output_metrics(outputs["val"], ctx.data, "val"),
        output_metrics(outputs["test"], ctx.data, "test", val_output=outputs["val"]),
        measured,
    )
    metrics |= paired_metrics(ctx, settings, rows, study)
    versus = paired_delta(rows["val"], source_rows, ctx.metric, seed=ctx.config.search.seed)
    metrics |= versus.to_metrics("val_vs_source")
    return metrics


def _judged_with_source(own: float, source: float, settings: StudySettings) -> float:
    """A copy's validation objective: its source's, less what the copy loses on the same rows.

    Rounding weights can flip a few validation rows either way; a copy that scores above its
    source has gained nothing but that noise. Credited, the gain let a copy dominate its own
    source and smaller fp32 trials on the front, and then fail confirmation. So a copy's
    objective is the worse of its own metric and its source's.
    """
    return min(own, source) if settings.higher_is_better else max(own, source)


def _one_batch(feeds: dict[str, np.ndarray]) -> Any:
    """ONNX Runtime's calibration reader over one batch of training rows."""
    from onnxruntime.quantization import CalibrationDataReader

    class OneBatch(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = [feeds]

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self.left.pop() if self.left else None

    return OneBatch()


@contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantizer warns about pre-processing and logs per node; neither helps."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
