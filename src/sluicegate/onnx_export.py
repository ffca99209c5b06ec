"""Exports a trained pipeline (features + estimator) as one ONNX graph and checks it against the native model.

The only module that imports onnx, skl2onnx and onnxmltools. What converts, into one graph:

- features: numeric imputers and scalers (our converter, float64 like numpy: `_NumericBranch`),
  one-hot (skl2onnx; with `min_frequency` our converter, `_OneHotInfrequent`) and ordinal encoders
  with missing categories sent as "" (`_categorical_copy`), datetime parts (parsed on the input
  side: `_DATE_NOTE`);
- estimators: every scikit-learn estimator of the registry (skl2onnx), XGBoost (the onnxmltools
  converter registered with skl2onnx; labels come out as indices into `classes`), the torch MLP
  (its network exported by `torch.onnx.export(dynamo=False)` and spliced into the same graph, then
  the sigmoid/softmax or the target's de-standardising: `_convert_torch_mlp`).

Anything else (a step or estimator without a converter) yields `OnnxExport(ok=False, reason=...)`:
the caller keeps serving the native model."""

from __future__ import annotations

import copy
import functools
import logging
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, RobustScaler, StandardScaler

from sluicegate.features import DatetimeParts, FeaturePipeline
from sluicegate.onnx_runtime import MISSING_CATEGORY, OnnxExport, OnnxInput, OnnxPredictor
from sluicegate.trainers.base import EncodedLabelClassifier

log = logging.getLogger(__name__)

# onnxmltools' XGBoost converter refuses the default ai.onnx.ml opset (5); 17/3 is what ONNX
# Runtime 1.32, skl2onnx 1.20 and onnxmltools 1.16 agree on (LIBRARY-NOTES, ONNX section).
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
# Parity defaults: the graph computes in float32, the native pipeline in float64.
PROBA_TOLERANCE = 1e-4  # absolute, on class probabilities
VALUE_TOLERANCE = 1e-4  # relative to the scale of the native predictions (regression)
MAX_EXAMPLES = 5
_DATE_NOTE = (
    "ONNX has no operator that parses date text, so each datetime column enters the graph as one "
    "float32 input per part (year, month, ...), computed by the runtime with pandas' rules"
)


class _NotConvertible(Exception):
    """A part of the pipeline has no ONNX equivalent; the message says which and why."""


@dataclass(frozen=True)
class ParityReport:
    """How closely the ONNX graph reproduces the native pipeline on a holdout.

    `labels_equal` is the share of rows whose label agrees (classification); `max_abs_diff` is the
    largest absolute difference of a class probability or a regression value; `limit` is the
    absolute bound it was held to (`tolerance`, times `scale` for regression). Label differences
    on rows whose two best native probabilities are within `limit` of each other (`near_ties`)
    are explained by float32 rounding and do not fail the check. So are any differences on rows
    where a k-nearest-neighbours model's k-th and (k+1)-th neighbours are equally far: which of
    them is taken is rounding too, and such rows count as near ties.
    """

    rows: int
    task: str
    compared: str
    labels_equal: float | None
    label_mismatches: int
    near_ties: int
    max_abs_diff: float | None
    tolerance: float
    scale: float
    limit: float
    passed: bool
    examples: tuple[dict[str, Any], ...] = ()
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["examples"] = [dict(e) for e in self.examples]
        return data


# ---------------------------------------------------------------- converters for the project's models
@functools.cache
def _register_converters() -> None:
    """Teach skl2onnx XGBoost (onnxmltools) and the torch MLP; once per process."""
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    from sluicegate.trainers.torch_mlp import TorchMLPClassifier, TorchMLPRegressor
    from sluicegate.trainers.xgb import estimator_classes

    XGBClassifier, XGBRegressor = estimator_classes()

    _patch_hist_gradient_boosting()
    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    update_registered_converter(XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
                                convert_xgboost, options=classifier_options)
    update_registered_converter(XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes,
                                convert_xgboost)
    update_registered_converter(_NumericBranch, "SluicegateNumericBranch", _numeric_shape, _convert_numeric)
    update_registered_converter(_OneHotInfrequent, "SluicegateOneHotInfrequent", _onehot_shape, _convert_onehot)
    update_registered_converter(TorchMLPClassifier, "SluicegateTorchMLPClassifier",
                                calculate_linear_classifier_output_shapes, _convert_torch_mlp,
                                options=classifier_options)
    update_registered_converter(TorchMLPRegressor, "SluicegateTorchMLPRegressor",
                                calculate_linear_regressor_output_shapes, _convert_torch_mlp)


class _NumericBranch:
    """The numeric branch (imputer, scaler) as float64 arithmetic, for a converter of our own.

    The native pipeline imputes and scales in float64 and casts to float32 at the end; skl2onnx's
    Imputer/Scaler operators compute in float32 with float32 constants, a few ulp away, and tree
    thresholds sit exactly in such gaps (a random forest disagreed on 7 of 200 labels). The graph
    therefore takes numeric columns as float64 and repeats numpy's operations in the same order.
    """

    def __init__(self, ops: list[tuple[str, np.ndarray]], width: int):
        self.ops = ops  # ("fill" | "sub" | "div" | "mul" | "add", float64 vector)
        self.width = width

    @classmethod
    def from_fitted(cls, trans: Any, width: int, name: str) -> _NumericBranch:
        steps = [] if trans == "passthrough" else ([s for _, s in trans.steps] if isinstance(trans, Pipeline) else [trans])
        ops: list[tuple[str, np.ndarray]] = []
        for step in steps:
            if step == "passthrough" or step is None:
                continue
            if isinstance(step, SimpleImputer):
                stats = np.asarray(step.statistics_, dtype=np.float64)
                if np.isnan(stats).any() or not pd.isna(step.missing_values) or step.add_indicator:
                    raise _NotConvertible(f"features.{name}: an imputer that drops all-missing columns, adds "
                                          "indicators or imputes a value other than NaN has no converter here")
                ops.append(("fill", stats))
            elif isinstance(step, StandardScaler):
                if step.with_mean:
                    ops.append(("sub", np.asarray(step.mean_, dtype=np.float64)))
                if step.with_std:
                    ops.append(("div", np.asarray(step.scale_, dtype=np.float64)))
            elif isinstance(step, MinMaxScaler):
                if step.clip:
                    raise _NotConvertible(f"features.{name}: MinMaxScaler(clip=True) has no converter here")
                ops += [("mul", np.asarray(step.scale_, dtype=np.float64)), ("add", np.asarray(step.min_, dtype=np.float64))]
            elif isinstance(step, RobustScaler):
                if step.with_centering:
                    ops.append(("sub", np.asarray(step.center_, dtype=np.float64)))
                if step.with_scaling:
                    ops.append(("div", np.asarray(step.scale_, dtype=np.float64)))
            else:
                raise _NotConvertible(f"features.{name}: {type(step).__name__} has no ONNX converter")
        return cls(ops, width)


def _numeric_shape(operator) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    operator.outputs[0].type = FloatTensorType([None, operator.raw_operator.width])


def _convert_numeric(scope, operator, container) -> None:
    branch = operator.raw_operator
    name = scope.get_unique_variable_name
    names = [v.full_name for v in operator.inputs]
    x = names[0]
    if len(names) > 1:
        x = name("num_concat")
        container.add_node("Concat", names, x, axis=1, name=name("Concat"))
    for op, values in branch.ops:
        const, out = name(f"num_{op}"), name("num")
        container.add_initializer(const, onnx.TensorProto.DOUBLE, [len(values)], values.tolist())
        if op == "fill":
            isnan = name("isnan")
            container.add_node("IsNaN", x, isnan, name=name("IsNaN"))
            container.add_node("Where", [isnan, const, x], out, name=name("Where"))
        else:
            container.add_node({"sub": "Sub", "div": "Div", "mul": "Mul", "add": "Add"}[op], [x, const], out,
                               name=name(op))
        x = out
    container.add_node("Cast", x, operator.outputs[0].full_name, to=onnx.TensorProto.FLOAT, name=name("Cast"))


def _patch_hist_gradient_boosting() -> None:
    """skl2onnx 1.20 passes a leaf's `missing_go_to_left` as Python False into an ints attribute,
    which protobuf 7 refuses ("Expected an int, got a boolean"), so no HistGradientBoosting model
    converts. Its `add_node` gets the flag as an int; drop this when skl2onnx fixes it."""
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node
    if getattr(original, "_sluicegate", False):
        return

    def add_node(*args, nodes_missing_value_tracks_true=0, **kwargs):
        return original(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    add_node._sluicegate = True
    tree_ensemble.add_node = add_node


def _torch_network_graph(est: Any, opset: int) -> onnx.ModelProto:
    """The MLP's network alone (exported by the torch trainer, which owns torch)."""
    from sluicegate.trainers.torch_mlp import export_network_onnx

    return onnx.load_from_string(export_network_onnx(est, opset))


def _convert_torch_mlp(scope, operator, container) -> None:
    """skl2onnx converter: the exported network's nodes spliced in, then the estimator's own head."""
    est = operator.raw_operator
    opset = container.target_opset
    prefix = scope.get_unique_variable_name("mlp") + "_"
    net = onnx.compose.add_prefix(_torch_network_graph(est, opset), prefix)
    container.add_node("Identity", operator.inputs[0].full_name, prefix + "x", name=prefix + "in")
    container.initializers.extend(net.graph.initializer)
    container.nodes.extend(net.graph.node)
    logits = prefix + "logits"
    name = scope.get_unique_variable_name
    if operator.type == "SluicegateTorchMLPRegressor":
        std, mean = name("y_std"), name("y_mean")
        container.add_initializer(std, onnx.TensorProto.FLOAT, [], [float(est.y_std_)])
        container.add_initializer(mean, onnx.TensorProto.FLOAT, [], [float(est.y_mean_)])
        scaled = name("scaled")
        container.add_node("Mul", [logits, std], scaled, name=name("Mul"))
        container.add_node("Add", [scaled, mean], operator.outputs[0].full_name, name=name("Add"))
        return
    proba = operator.outputs[1].full_name
    if est.n_outputs_ == 1:  # one logit: P(class 1) = sigmoid, P(class 0) = 1 - it (as predict_proba)
        p1, p0, one = name("p1"), name("p0"), name("one")
        container.add_initializer(one, onnx.TensorProto.FLOAT, [], [1.0])
        container.add_node("Sigmoid", logits, p1, name=name("Sigmoid"))
        container.add_node("Sub", [one, p1], p0, name=name("Sub"))
        container.add_node("Concat", [p0, p1], proba, axis=1, name=name("Concat"))
    else:
        container.add_node("Softmax", logits, proba, axis=1, name=name("Softmax"))
    index, classes = name("index"), name("classes")
    labels = np.asarray(est.classes_)
    if labels.dtype.kind in "iub":
        container.add_initializer(classes, onnx.TensorProto.INT64, [len(labels)], labels.astype(np.int64).tolist())
    else:
        container.add_initializer(classes, onnx.TensorProto.STRING, [len(labels)],
                                  [str(v).encode() for v in labels])
    container.add_node("ArgMax", proba, index, axis=1, keepdims=0, name=name("ArgMax"))
    container.add_node("Gather", [classes, index], operator.outputs[0].full_name, axis=0, name=name("Gather"))


# ---------------------------------------------------------------- the pipeline, rewritten for conversion
def _imputer_is_inert(imputer: SimpleImputer, width: int) -> bool:
    """Whether the fitted string imputer leaves None as None (the training pipeline sends None)."""
    probe = np.full((1, width), None, dtype=object)
    with warnings.catch_warnings():  # a nameless probe row on purpose: sklearn's feature-name warning is noise here
        warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
        return bool(pd.isna(imputer.transform(probe)).all())


def _categorical_copy(step: Any, width: int) -> Any:
    """The categorical branch with missing values as "" (ONNX string tensors have no None/NaN).

    The training pipeline turns missing categories into None (`features._as_str`), which the
    fitted string imputer does not treat as missing: the encoders learn None as a category of its
    own. The copy mirrors that: None among the learned categories becomes "", and an inert
    imputer is dropped. An imputer that does fill None would be kept with `missing_values=""`.
    """
    steps = list(step.steps) if isinstance(step, Pipeline) else [("encode", step)]
    out = []
    for name, part in steps:
        if isinstance(part, SimpleImputer):
            if _imputer_is_inert(part, width):
                continue
            part = copy.deepcopy(part)
            part.missing_values = MISSING_CATEGORY
        elif isinstance(part, (OneHotEncoder, OrdinalEncoder)):
            if isinstance(part, OneHotEncoder) and part.handle_unknown == "infrequent_if_exist":
                # skl2onnx's graph fails on an unseen category instead of counting it as infrequent
                out.append((name, _OneHotInfrequent.from_fitted(part)))
                continue
            part = copy.deepcopy(part)
            cats = []
            for i, values in enumerate(part.categories_):
                values = list(values)
                if MISSING_CATEGORY in values and any(pd.isna(v) for v in values):
                    raise _NotConvertible(f"categorical feature {i}: both a missing value and the empty "
                                          "string are categories, and ONNX sends missing as the empty string")
                cats.append(np.array([MISSING_CATEGORY if pd.isna(v) else str(v) for v in values], dtype=object))
            part.categories_ = cats
            if isinstance(part, OrdinalEncoder):
                # the converter reads these only for NaN categories, which are now ""
                part._missing_indices = {}
        else:
            raise _NotConvertible(f"categorical step {name!r} ({type(part).__name__}) has no ONNX converter")
        out.append((name, part))
    if not out:
        raise _NotConvertible("the categorical branch has no encoder")
    return Pipeline(out) if len(out) > 1 else out[0][1]


class _OneHotInfrequent(TransformerMixin, BaseEstimator):
    """A fitted OneHotEncoder(handle_unknown="infrequent_if_exist"), for a converter of our own.

    Per feature, a string -> index lookup (ai.onnx.ml LabelEncoder; opset 17's Equal has no
    strings) whose default is the infrequent column, then index == 0..width-1 as floats: frequent
    categories in learned order, then the infrequent column where infrequent categories exist,
    which also takes unseen ones; where none exist an unseen category is all zeros, as in sklearn.

    An estimator only so that a Pipeline (after a string imputer that fills missing categories)
    accepts it as a step; nothing fits or runs it but the converter.
    """

    def __init__(self, features: list[tuple[list[str], list[str], bool]]):
        self.features = features  # (frequent, infrequent, has_infrequent_column) per input column

    @classmethod
    def from_fitted(cls, enc: OneHotEncoder) -> _OneHotInfrequent:
        if enc.drop is not None:
            raise _NotConvertible("OneHotEncoder(drop=...) with min_frequency has no converter here")
        features = []
        infrequent_all = enc.infrequent_categories_
        for values, infrequent in zip(enc.categories_, infrequent_all):
            rare = [] if infrequent is None else [_as_category(v) for v in infrequent]
            frequent = [_as_category(v) for v in values if _as_category(v) not in rare]
            if set(frequent) & set(rare) or len(set(frequent)) != len(frequent):
                raise _NotConvertible("a category and a missing value both map to the empty string")
            features.append((frequent, rare, infrequent is not None))
        return cls(features)

    @property
    def width(self) -> int:
        return sum(len(f) + int(has) for f, _, has in self.features)


def _as_category(value: Any) -> str:
    return MISSING_CATEGORY if pd.isna(value) else str(value)


def _onehot_shape(operator) -> None:
    from skl2onnx.common.data_types import FloatTensorType

    operator.outputs[0].type = FloatTensorType([None, operator.raw_operator.width])


def _convert_onehot(scope, operator, container) -> None:
    enc = operator.raw_operator
    name = scope.get_unique_variable_name
    columns = [v.full_name for v in operator.inputs]
    if len(columns) == 1 and len(enc.features) > 1:  # one [N, k] input: split it per feature
        parts = [name("cat") for _ in enc.features]
        container.add_node("Split", columns[0], parts, axis=1, name=name("Split"))
        columns = parts
    pieces = []
    for column, (frequent, rare, has_rare) in zip(columns, enc.features):
        width = len(frequent) + int(has_rare)
        keys = frequent + rare
        values = list(range(len(frequent))) + [len(frequent)] * len(rare)
        flat, index, positions, equal, onehot = name("flat"), name("index"), name("positions"), name("eq"), name("onehot")
        shape = name("shape")
        container.add_initializer(shape, onnx.TensorProto.INT64, [1], [-1])
        container.add_node("Reshape", [column, shape], flat, name=name("Reshape"))
        container.add_node("LabelEncoder", flat, index, op_domain="ai.onnx.ml", op_version=2, name=name("LabelEncoder"),
                           keys_strings=keys or [MISSING_CATEGORY], values_int64s=values or [-1],
                           default_int64=len(frequent) if has_rare else -1)
        column_index = name("col_index")
        axes = name("axes")
        container.add_initializer(axes, onnx.TensorProto.INT64, [1], [1])
        container.add_node("Unsqueeze", [index, axes], column_index, name=name("Unsqueeze"))
        container.add_initializer(positions, onnx.TensorProto.INT64, [width], list(range(width)))
        container.add_node("Equal", [column_index, positions], equal, name=name("Equal"))
        container.add_node("Cast", equal, onehot, to=onnx.TensorProto.FLOAT, name=name("Cast"))
        pieces.append(onehot)
    if len(pieces) == 1:
        container.add_node("Identity", pieces[0], operator.outputs[0].full_name, name=name("Identity"))
    else:
        container.add_node("Concat", pieces, operator.outputs[0].full_name, axis=1, name=name("Concat"))


def _conversion_pipeline(model: Any) -> tuple[Pipeline, tuple[OnnxInput, ...], Any]:
    """A copy of the fitted pipeline that skl2onnx converts, the graph's inputs, and the raw estimator."""
    if not (isinstance(model, Pipeline) and len(model.steps) == 2 and isinstance(model.steps[0][1], FeaturePipeline)):
        raise _NotConvertible(f"expected the trainer's Pipeline(features, model), got {type(model).__name__}")
    features, estimator = model.steps[0][1], model.steps[1][1]
    ct = features.transformer
    if not isinstance(ct, ColumnTransformer):
        raise _NotConvertible(f"features: expected a ColumnTransformer, got {type(ct).__name__}")
    ct = copy.deepcopy(ct)
    inputs: list[OnnxInput] = []
    rewritten = []
    for name, trans, columns in ct.transformers_:
        if isinstance(trans, str) and trans == "drop":
            rewritten.append((name, trans, columns))
            continue
        cols = list(columns)
        if isinstance(trans, DatetimeParts):
            names = [f"{c}__{p}" for c in trans.columns_ for p in trans.parts]
            inputs += [OnnxInput(f"{c}__{p}", c, "datetime", p) for c in trans.columns_ for p in trans.parts]
            rewritten.append((name, "passthrough", names))
        elif name == "cat" or _is_categorical(trans):
            inputs += [OnnxInput(c, c, "categorical") for c in cols]
            rewritten.append((name, _categorical_copy(trans, len(cols)), cols))
        elif trans == "passthrough" or hasattr(trans, "transform"):
            inputs += [OnnxInput(c, c, "numeric") for c in cols]
            rewritten.append((name, _NumericBranch.from_fitted(trans, len(cols), name), cols))
        else:
            raise _NotConvertible(f"features.{name}: {type(trans).__name__} has no ONNX converter")
    ct.transformers_ = rewritten
    # the rewritten datetime branch reads columns that only exist as graph inputs
    ct.feature_names_in_ = np.array([i.name for i in inputs], dtype=object)
    ct.n_features_in_ = len(inputs)
    if isinstance(estimator, EncodedLabelClassifier):
        estimator = estimator.estimator_
    return Pipeline([("features", ct), ("model", estimator)]), tuple(inputs), estimator


def _is_categorical(trans: Any) -> bool:
    steps = [s for _, s in trans.steps] if isinstance(trans, Pipeline) else [trans]
    return any(isinstance(s, (OneHotEncoder, OrdinalEncoder)) for s in steps)


def _model_kind(model: Any) -> str:
    est = model.steps[-1][1] if isinstance(model, Pipeline) else model
    if isinstance(est, EncodedLabelClassifier):
        est = est.estimator_
    return type(est).__name__


def export_onnx(model: Any, sample: pd.DataFrame, task: str) -> OnnxExport:
    """Convert the whole fitted pipeline (features and estimator) into one ONNX graph.

    Args:
        model: the trainer's `Pipeline([("features", FeaturePipeline), ("model", estimator)])`.
        sample: a few raw rows (a holdout head); the graph must load and score them.
        task: classification or regression.

    Returns:
        An `OnnxExport`: `ok=True` with the serialised graph and its input description, or
        `ok=False` with the reason a part has no ONNX equivalent (never raises for that).
    """
    kind = _model_kind(model)
    try:
        pipeline, inputs, estimator = _conversion_pipeline(model)
        classes = tuple(_plain(c) for c in model.classes_) if task == "classification" else None
        onx = _convert(pipeline, inputs, estimator, task)
    except _NotConvertible as exc:
        return _refused(task, kind, str(exc))
    except Exception as exc:  # skl2onnx raises many types for "no converter" / "not supported"
        return _refused(task, kind, f"skl2onnx could not convert {kind}: {type(exc).__name__}: {_first_line(exc)}")
    outputs = [o.name for o in onx.graph.output]
    is_clf = task == "classification"
    export = OnnxExport(
        ok=True, task=task, kind=kind, model=onx.SerializeToString(), inputs=inputs, classes=classes,
        label_output=outputs[0] if is_clf else None,
        proba_output=outputs[1] if is_clf and len(outputs) > 1 and hasattr(model, "predict_proba") else None,
        value_output=None if is_clf else outputs[0],
        label_is_index=isinstance(model.steps[-1][1], EncodedLabelClassifier),  # XGBoost: fitted on 0..k-1
        opset={d.domain or "ai.onnx": int(d.version) for d in onx.opset_import},
    )
    try:
        OnnxPredictor(export).predict_frame(sample.head(8))
    except Exception as exc:
        return _refused(task, kind, f"ONNX Runtime could not run the {kind} graph: {type(exc).__name__}: "
                                    f"{_first_line(exc)}")
    log.info("exported %s to ONNX: %d inputs, %.0f KiB", kind, len(inputs), len(export.model) / 1024)
    return export


def _convert(pipeline: Pipeline, inputs: tuple[OnnxInput, ...], estimator: Any, task: str) -> onnx.ModelProto:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    _register_converters()
    # Numeric inputs are declared float32 here, because skl2onnx makes every converter compute in
    # float64 (and ONNX Runtime refuse the graph) as soon as one input is float64; only our numeric
    # converter reads them, as float64, and the declared type is corrected afterwards.
    kinds = {"numeric": FloatTensorType, "categorical": StringTensorType, "datetime": FloatTensorType}
    types = [(i.name, kinds[i.kind]([None, 1])) for i in inputs]
    options = {id(estimator): {"zipmap": False}} if task == "classification" else None
    onx = convert_sklearn(pipeline, initial_types=types, target_opset=TARGET_OPSET, options=options)
    numeric = {i.name for i in inputs if i.kind == "numeric"}
    for value in onx.graph.input:
        if value.name in numeric:
            value.type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    return onx


def _refused(task: str, kind: str, reason: str) -> OnnxExport:
    log.info("no ONNX export for %s: %s", kind, reason)
    return OnnxExport(ok=False, reason=reason, task=task, kind=kind)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------- parity
def check_parity(
    model: Any, export: OnnxExport, holdout: pd.DataFrame, task: str, tolerance: float | None = None,
) -> ParityReport:
    """Score `holdout` natively and through the graph and compare row by row.

    Args:
        model: the native pipeline.
        export: its ONNX export.
        holdout: raw rows (extra columns such as the target are ignored).
        task: classification or regression.
        tolerance: absolute on probabilities (default 1e-4); for regression relative to the scale
            of the native predictions, max(|prediction|) (default 1e-4), since the graph computes in float32.

    Returns:
        A `ParityReport`; `passed` only when every label agrees (bar near-ties) and every
        probability or value is within the limit.
    """
    rows = len(holdout)
    if not export.ok:
        return ParityReport(rows, task, "none", None, 0, 0, None, tolerance or 0.0, 1.0, 0.0, False,
                            reason=f"no ONNX graph: {export.reason}")
    predictor = OnnxPredictor(export)
    if task == "classification":
        return _classification_parity(model, predictor, holdout, tolerance or PROBA_TOLERANCE)
    native = np.asarray(model.predict(holdout), dtype=np.float64)
    onnx_values = predictor.predict_frame(holdout).astype(np.float64)
    tol = VALUE_TOLERANCE if tolerance is None else tolerance
    scale = float(np.max(np.abs(native))) if rows else 1.0
    scale = scale if scale > 0 else 1.0
    diff = np.abs(native - onnx_values)
    limit = tol * scale
    ties = _neighbour_ties(model, holdout) & (diff > limit)
    worst = float(diff[~ties].max()) if (~ties).any() else 0.0
    order = np.argsort(-diff)[:MAX_EXAMPLES]
    examples = tuple({"row": int(i), "native": float(native[i]), "onnx": float(onnx_values[i]),
                      "diff": float(diff[i]), **({"near_tie": True} if ties[i] else {})} for i in order)
    return ParityReport(rows, task, "values", None, 0, int(ties.sum()), worst, tol, scale, limit, bool(worst <= limit),
                        examples)


def _neighbour_ties(model: Any, holdout: pd.DataFrame, rel: float = 1e-5) -> np.ndarray:
    """Rows whose k-th and (k+1)-th nearest training rows are equally far (k-NN models; else none)."""
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    est = model.steps[-1][1] if isinstance(model, Pipeline) else model
    est = getattr(est, "estimator_", est)  # EncodedLabelClassifier wraps the fitted classifier
    ties = np.zeros(len(holdout), dtype=bool)
    if not isinstance(est, (KNeighborsClassifier, KNeighborsRegressor)) or not len(holdout):
        return ties
    k = est.n_neighbors
    if est.n_samples_fit_ <= k:
        return ties
    X = holdout
    for _, step in (model.steps[:-1] if isinstance(model, Pipeline) else []):
        X = step.transform(X)
    dist, _ = est.kneighbors(X, n_neighbors=k + 1)
    return np.abs(dist[:, k] - dist[:, k - 1]) <= rel * np.maximum(dist[:, k], 1.0)


def _classification_parity(model: Any, predictor: OnnxPredictor, holdout: pd.DataFrame, tol: float) -> ParityReport:
    rows = len(holdout)
    native_labels = np.asarray(model.predict(holdout), dtype=object)
    onnx_labels = np.asarray(predictor.predict_frame(holdout), dtype=object)
    same = np.array([_plain(a) == _plain(b) for a, b in zip(native_labels, onnx_labels)], dtype=bool)
    has_proba = predictor.export.proba_output is not None
    worst, ties, examples = None, np.zeros(rows, dtype=bool), []
    if has_proba:
        native = np.asarray(model.predict_proba(holdout), dtype=np.float64)
        mine = predictor.predict_proba_frame(holdout).astype(np.float64)
        diff = np.abs(native - mine).max(axis=1) if rows else np.zeros(0)
        if native.shape[1] > 1:
            top2 = np.sort(native, axis=1)[:, -2:]
            ties = (top2[:, 1] - top2[:, 0]) <= 2 * tol
        knn = _neighbour_ties(model, holdout) & (diff > tol)
        ties = ties | knn
        worst = float(diff[~knn].max()) if (~knn).any() else 0.0
        for i in np.argsort(-diff)[:MAX_EXAMPLES]:
            examples.append({"row": int(i), "native": [float(v) for v in native[i]],
                             "onnx": [float(v) for v in mine[i]], "diff": float(diff[i])})
    mismatched = np.flatnonzero(~same)
    for i in mismatched[:MAX_EXAMPLES]:
        examples.append({"row": int(i), "native_label": _plain(native_labels[i]), "onnx_label": _plain(onnx_labels[i]),
                         "near_tie": bool(ties[i])})
    unexplained = int((~same & ~ties).sum())
    passed = unexplained == 0 and (worst is None or worst <= tol)
    return ParityReport(
        rows, "classification", "probabilities" if has_proba else "labels",
        float(same.mean()) if rows else 1.0, int((~same).sum()), int((~same & ties).sum()), worst,
        tol, 1.0, tol, bool(passed), tuple(examples),
    )
