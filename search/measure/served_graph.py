"""The served graph: fitted preprocessing, the network and the output decoding as one ONNX model.

The graph takes raw columns, one input per column named after it, shape [N, 1]: float64 for a
numeric column (NaN is missing) and string for a categorical one (`MISSING_CATEGORY` is
missing). It returns the prediction first (class labels for a classifier), then the class
probabilities or the anomaly score, and describes both in its metadata. It is the
`Preprocessor`'s `transform_arrays` and `decode_arrays` written as ONNX operators, so one ONNX
Runtime call serves a row, from any language, and a trial's latency times what is served.

Numbers enter as float64, not float32: the pandas path standardises in float64 and rounds once,
and a column such as a timestamp would lose its digits in float32 before it is scaled.

This module needs `onnx` and NumPy, not torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lightning_modules.errors import TabslimInputError
from lightning_modules.preprocessing import MISSING_CATEGORY, Preprocessor

PREDICTION, PROBABILITIES, ANOMALY_SCORE = "prediction", "probabilities", "anomaly_score"
# Keys of the graph's metadata_props.
META_TASK, META_INPUTS, META_OUTPUTS, META_CLASSES = (
    "tabslim.task",
    "tabslim.inputs",
    "tabslim.outputs",
    "tabslim.classes",
)
_NET = "network/"
_OWN = "tabslim/"
_ML_DOMAIN, _ML_OPSET = "ai.onnx.ml", 3
# Softmax on one axis and Reduce* with axes as an input need opset 13.
_MIN_OPSET = 13


def compose(network: onnx.ModelProto | str | Path, preprocessor: Preprocessor) -> onnx.ModelProto:
    """One model: raw columns -> preprocessing -> `network` -> prediction (and scores).

    Args:
        network: an exported network graph with inputs `x_num` (and `x_cat`) and one output,
            as `search.measure.export_onnx` writes it, or its INT8 copy.
    """
    net = network if isinstance(network, onnx.ModelProto) else onnx.load(str(network))
    opset = _default_opset(net)
    clash = {PREDICTION, PROBABILITIES, ANOMALY_SCORE} & set(preprocessor.feature_columns)
    if clash:
        raise TabslimInputError(
            f"a column may not be named like an output of the served graph, but got {sorted(clash)}"
        )
    net = onnx.compose.add_prefix(net, _NET)
    wanted = [i.name[len(_NET) :] for i in net.graph.input]
    (output,) = [o.name for o in net.graph.output]
    builder = _Builder()
    inputs = _raw_inputs(preprocessor)
    x_num = _numeric(builder, preprocessor, net_name=_NET + "x_num")
    if "x_cat" in wanted:
        _categories(builder, preprocessor, net_name=_NET + "x_cat")
    outputs = _decode(builder, preprocessor, output, x_num, opset)
    graph = helper.make_graph(
        [*builder.nodes[: builder.split], *net.graph.node, *builder.nodes[builder.split :]],
        "tabslim_served",
        inputs,
        outputs,
        initializer=[*builder.constants, *net.graph.initializer],
        value_info=list(net.graph.value_info),
    )
    imports = [o for o in net.opset_import if o.domain != _ML_DOMAIN]
    model = helper.make_model(
        graph, opset_imports=[*imports, helper.make_opsetid(_ML_DOMAIN, _ML_OPSET)]
    )
    model.ir_version = net.ir_version
    model.functions.extend(net.functions)
    _describe(model, preprocessor)
    onnx.checker.check_model(model)
    return model


def _default_opset(net: onnx.ModelProto) -> int:
    versions = [o.version for o in net.opset_import if o.domain in ("", "ai.onnx")]
    opset = max(versions, default=0)
    if opset < _MIN_OPSET:
        raise TabslimInputError(f"the network's graph needs opset >= {_MIN_OPSET}, but got {opset}")
    return opset


class _Builder:
    """Nodes and constants of the graph around the network, with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []
        self.split = 0  # nodes before this index feed the network; the rest decode its output
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{_OWN}{stem}_{self._count}"

    def constant(self, stem: str, value: Any, dtype: Any = None) -> str:
        name = self.name(stem)
        self.constants.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        out = output or self.name(op_type.lower())
        domain = _ML_DOMAIN if op_type == "LabelEncoder" else ""
        self.nodes.append(
            helper.make_node(
                op_type, inputs, [out], name=self.name(op_type), domain=domain, **attrs
            )
        )
        return out


def _raw_inputs(preprocessor: Preprocessor) -> list[onnx.ValueInfoProto]:
    numeric = [helper.make_tensor_value_info(c, TensorProto.DOUBLE, ["N", 1]) for c in
               preprocessor.numeric]  # fmt: skip
    strings = [helper.make_tensor_value_info(c, TensorProto.STRING, ["N", 1]) for c in
               preprocessor.categorical]  # fmt: skip
    return [*numeric, *strings]


def _numeric(b: _Builder, prep: Preprocessor, net_name: str) -> str:
    """x_num (N, d_num) float32: imputed, standardised columns, then missing indicators."""
    if not prep.numeric:
        # A categorical-only table: an empty (N, 0) block, N taken from the first column.
        first = next(iter(prep.categorical))
        rows = b.op("Shape", [first], start=0, end=1)
        shape = b.op("Concat", [rows, b.constant("zero", [0], np.int64)], axis=0)
        empty = helper.make_tensor("value", TensorProto.FLOAT, [1], [0.0])
        b.op("ConstantOfShape", [shape], net_name, value=empty)
        b.split = len(b.nodes)
        return net_name
    raw = b.op("Concat", list(prep.numeric), axis=1) if len(prep.numeric) > 1 else prep.numeric[0]
    gaps = b.op("IsNaN", [raw])
    filled = b.op("Where", [gaps, b.constant("medians", [prep.medians], np.float64), raw])
    centred = b.op("Sub", [filled, b.constant("means", [prep.means], np.float64)])
    scaled = b.op("Div", [centred, b.constant("stds", [prep.stds], np.float64)])
    parts = [b.op("Cast", [scaled], to=TensorProto.FLOAT)]
    for column in prep.indicators:
        parts.append(b.op("Cast", [b.op("IsNaN", [column])], to=TensorProto.FLOAT))
    b.op("Concat", parts, net_name, axis=1)
    b.split = len(b.nodes)
    return net_name


def _categories(b: _Builder, prep: Preprocessor, net_name: str) -> None:
    """x_cat (N, n_cat) int64: code i + 1 for the i-th training category, 0 for an unseen one."""
    codes = []
    for column, vocabulary in prep.categorical.items():
        codes.append(
            b.op(
                "LabelEncoder",
                [column],
                keys_strings=list(vocabulary),
                values_int64s=list(range(1, len(vocabulary) + 1)),
                default_int64=0,
            )
        )
    b.op("Concat", codes, net_name, axis=1)
    b.split = len(b.nodes)


def _decode(
    b: _Builder, prep: Preprocessor, output: str, x_num: str, opset: int
) -> list[onnx.ValueInfoProto]:
    """The network's output -> (prediction, probabilities | anomaly_score), as `decode_arrays`."""
    if prep.task.is_regression:
        value = b.op("Cast", [b.op("Reshape", [output, b.constant("flat", [-1], np.int64)])],
                     to=TensorProto.DOUBLE)  # fmt: skip
        scaled = b.op("Mul", [value, b.constant("std", prep.target_std, np.float64)])
        b.op("Add", [scaled, b.constant("mean", prep.target_mean, np.float64)], PREDICTION)
        return [helper.make_tensor_value_info(PREDICTION, TensorProto.DOUBLE, ["N"])]
    labels, label_type = _label_constant(prep.classes)
    label_table = b.constant("classes", labels)
    if prep.task.is_anomaly:
        diff = b.op("Sub", [b.op("Cast", [output], to=TensorProto.DOUBLE),
                            b.op("Cast", [x_num], to=TensorProto.DOUBLE)])  # fmt: skip
        total = b.op("ReduceSum", [b.op("Mul", [diff, diff]), b.constant("axis", [1], np.int64)],
                     keepdims=0)  # fmt: skip
        score = b.op("Div", [total, b.constant("d", float(prep.d_num), np.float64)], ANOMALY_SCORE)
        threshold = np.inf if prep.anomaly_threshold is None else prep.anomaly_threshold
        flagged = b.op("GreaterOrEqual", [score, b.constant("threshold", threshold, np.float64)])
        index = b.op("Cast", [flagged], to=TensorProto.INT64)
        b.op("Gather", [label_table, index], PREDICTION, axis=0)
        second = helper.make_tensor_value_info(ANOMALY_SCORE, TensorProto.DOUBLE, ["N"])
    else:
        probabilities = b.op("Softmax", [output], PROBABILITIES, axis=1)
        index = b.op("ArgMax", [probabilities], axis=1, keepdims=0)
        b.op("Gather", [label_table, index], PREDICTION, axis=0)
        second = helper.make_tensor_value_info(
            PROBABILITIES, TensorProto.FLOAT, ["N", len(prep.classes)]
        )
    return [helper.make_tensor_value_info(PREDICTION, label_type, ["N"]), second]


def _label_constant(classes: list[Any]) -> tuple[np.ndarray, int]:
    """Class labels as a tensor of their own type: bool, int64, float64, else strings."""
    if all(isinstance(c, bool | np.bool_) for c in classes):
        return np.asarray(classes, dtype=bool), TensorProto.BOOL
    if all(isinstance(c, int | np.integer) and not isinstance(c, bool) for c in classes):
        return np.asarray(classes, dtype=np.int64), TensorProto.INT64
    if all(isinstance(c, float | np.floating) for c in classes):
        return np.asarray(classes, dtype=np.float64), TensorProto.DOUBLE
    return np.asarray([str(c) for c in classes], dtype=object), TensorProto.STRING


def _describe(model: onnx.ModelProto, prep: Preprocessor) -> None:
    outputs = {PREDICTION: "the predicted class label" if prep.classes else "the predicted value"}
    if prep.task.is_anomaly:
        outputs[PREDICTION] = f"{prep.classes[1]!r} where anomaly_score >= the threshold"
        outputs[ANOMALY_SCORE] = "mean squared reconstruction error of the scaled numeric inputs"
    elif prep.classes:
        outputs[PROBABILITIES] = "class probabilities, one column per class in tabslim.classes"
    inputs = {c: "double [N, 1], NaN is missing" for c in prep.numeric}
    inputs |= {c: f"string [N, 1], {MISSING_CATEGORY!r} is missing" for c in prep.categorical}
    meta = {
        META_TASK: prep.task.value,
        META_INPUTS: json.dumps(inputs),
        META_OUTPUTS: json.dumps(outputs),
        META_CLASSES: json.dumps(Preprocessor.to_dict(prep)["classes"]),
        "tabslim.target": str(prep.target),
    }
    helper.set_model_props(model, meta)
