"""Packaging and deploy steps without servers: request schema, prediction log, canary comparison, manifests, Bento."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from sluicegate.config import DeployConfig, PackagingConfig, SecretRef
from sluicegate.deploy import compare_predictions, kubernetes_manifests
from sluicegate.packaging import BentoResult
from sluicegate.serving.predlog import PredictionEvent, PredictionLog, log_path, read_prediction_log
from sluicegate.serving.schema import FeatureSchema, infer_feature_schema, record_model, records_frame
from tests.helpers import churn_frame

NUMERIC = ("tenure", "monthly_charges", "support_calls")
CATEGORICAL = ("plan", "region")
DATES = ("signup_date",)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return churn_frame(300)


@pytest.fixture(scope="module")
def schema(frame) -> FeatureSchema:
    return infer_feature_schema(frame, NUMERIC, CATEGORICAL, DATES)


def _record(frame: pd.DataFrame) -> dict:
    row = frame.iloc[0]
    return {"tenure": int(row.tenure), "monthly_charges": float(row.monthly_charges),
            "support_calls": int(row.support_calls), "plan": row.plan, "region": row.region,
            "signup_date": row.signup_date}


def test_schema_from_training_frame(schema):
    kinds = {f.name: f.kind for f in schema.fields}
    assert kinds == {"tenure": "int", "monthly_charges": "float", "support_calls": "int",
                     "plan": "category", "region": "category", "signup_date": "datetime"}
    plan = next(f for f in schema.fields if f.name == "plan")
    assert plan.categories == ("basic", "plus", "pro")
    assert FeatureSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


def test_record_model_accepts_a_training_row(frame, schema):
    Record = record_model(schema)
    rec = Record.model_validate(_record(frame))
    out = records_frame([rec], schema)
    assert list(out.columns) == schema.columns
    assert out.loc[0, "signup_date"].startswith(frame.iloc[0].signup_date)


@pytest.mark.parametrize("change, field", [
    ({"tenure": "twelve"}, "tenure"),
    ({"monthly_charges": math.nan}, "monthly_charges"),
    ({"monthly_charges": math.inf}, "monthly_charges"),
    ({"plan": "platinum"}, "plan"),
    ({"signup_date": "not a date"}, "signup_date"),
    ({"unexpected": 1}, "unexpected"),
    ({"region": None}, "region"),
])
def test_record_model_rejects_bad_values_naming_the_field(frame, schema, change, field):
    Record = record_model(schema)
    with pytest.raises(ValidationError) as info:
        Record.model_validate({**_record(frame), **change})
    assert field in {str(e["loc"][0]) for e in info.value.errors()}


def test_record_model_requires_every_field(frame, schema):
    Record = record_model(schema)
    rec = _record(frame)
    del rec["tenure"]
    with pytest.raises(ValidationError) as info:
        Record.model_validate(rec)
    assert info.value.errors()[0]["loc"] == ("tenure",) and info.value.errors()[0]["type"] == "missing"


def test_nullable_numeric_column_allows_null():
    frame = pd.DataFrame({"x": [1.0, None, 3.0], "c": ["a", "b", "a"]})
    Record = record_model(infer_feature_schema(frame, ("x",), ("c",)))
    assert Record.model_validate({"x": None, "c": "a"}).x is None
    with pytest.raises(ValidationError):
        Record.model_validate({"x": 1.0, "c": None})


def test_prediction_log_round_trip(tmp_path):
    plog = PredictionLog(log_path(tmp_path, "churn"))
    plog.record([PredictionEvent(1000.0 + i, "churn", "3", "predict", "model", {"tenure": i}, i % 2) for i in range(5)])
    plog.close()
    everything = read_prediction_log("churn", home=tmp_path)
    assert len(everything) == 5 and list(everything["tenure"]) == [0, 1, 2, 3, 4]
    assert set(everything["model_version"]) == {"3"}
    assert list(read_prediction_log("churn", last_n=2, home=tmp_path)["tenure"]) == [3, 4]
    assert len(read_prediction_log("churn", since=1003.0, home=tmp_path)) == 2
    assert read_prediction_log("nothing", home=tmp_path).empty


def test_compare_predictions_tolerance():
    assert compare_predictions([1, 0, 1], [1, 0, 1], 0).passed
    assert not compare_predictions([1, 1], [1, 0], 0.5).passed
    assert compare_predictions([{"0": 0.2, "1": 0.8}], [{"0": 0.2000001, "1": 0.7999999}], 1e-6).passed
    report = compare_predictions([10.0, 20.5], [10.0, 20.0], 1e-3)
    assert report.mismatches == 1 and "row 1" in report.examples[0]
    assert not compare_predictions([1], [1, 0], 0).passed


def _bento(tmp_path: Path) -> BentoResult:
    return BentoResult("churn_model", "4", "churn_model:v4-abc", "churn_model:v4-def", str(tmp_path), "0" * 64,
                       "classification")


def test_kubernetes_manifests_structure(tmp_path):
    spec = DeployConfig(target="kubernetes", replicas=3, hpa={"min_replicas": 2, "max_replicas": 9, "cpu_target_percent": 60})
    packaging = PackagingConfig(auth_token=SecretRef(env="CHURN_TOKEN"))
    deployment, service, hpa = kubernetes_manifests(_bento(tmp_path), spec, packaging)
    assert [d["kind"] for d in (deployment, service, hpa)] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["image"] == "churn_model:v4-abc" and deployment["spec"]["replicas"] == 3
    assert deployment["metadata"]["name"] == "churn-model"  # DNS-1123: no underscores
    token = next(e for e in container["env"] if e["name"] == "CHURN_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "churn-model-auth", "key": "token"}
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "churn-model"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 9)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 60


def test_config_sections_default_off_and_name_keys():
    from sluicegate.config import ProjectConfig

    assert ProjectConfig.model_fields["deploy"].default.enabled is False
    with pytest.raises(ValidationError) as info:
        PackagingConfig(fallback="constant")
    assert "fallback_value" in str(info.value)
    with pytest.raises(ValidationError):
        PackagingConfig(auth_token=SecretRef(prefect_secret="x"))
    with pytest.raises(ValidationError):
        DeployConfig(target="heroku")


# ---------------------------------------------------------------- a real Bento, built without MLflow
@pytest.fixture(scope="module")
def built_bento(tmp_path_factory, frame):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from sluicegate.config import FeaturesConfig
    from sluicegate.features import FeatureColumns, FeaturePipeline, build_preprocessor
    from sluicegate.packaging import PackageInputs, build_bento
    from sluicegate.serving.schema import infer_feature_schema
    from sluicegate.settings import load_settings
    from sluicegate.tracking import ModelRecord

    home = tmp_path_factory.mktemp("pkg-home")
    cols = FeatureColumns(NUMERIC, CATEGORICAL, DATES)
    spec = FeaturesConfig(numeric={"columns": list(NUMERIC)}, categorical={"columns": list(CATEGORICAL)},
                          datetime={"columns": list(DATES)})
    pre = build_preprocessor(spec, cols)
    X = frame[[*NUMERIC, *CATEGORICAL, *DATES]]
    fp = FeaturePipeline(pre.fit(X), cols)
    model = Pipeline([("features", fp), ("model", LogisticRegression(max_iter=300))]).fit(X, frame["churned"])
    record = ModelRecord("unitpkg", "1", "run-x", "models:/unitpkg/1", {"test_roc_auc": 0.8},
                         {"sluice.data_fingerprint": "fp", "sluice.git_sha": "sha"})
    inputs = PackageInputs(record, model, None, infer_feature_schema(frame, NUMERIC, CATEGORICAL, DATES),
                           X.tail(5).reset_index(drop=True), "2026-01-01T00:00:00+00:00")
    settings = load_settings({"SLUICE_HOME": str(home), "BENTOML_HOME": str(home.parent / "pkg-bentoml")})
    return build_bento(inputs, PackagingConfig(), DeployConfig(), "classification", settings), settings


@pytest.mark.slow
def test_built_bento_has_dockerfile_service_and_canary(built_bento):
    bento, settings = built_bento
    root = Path(bento.bento_path)
    assert Path(bento.dockerfile).is_file()
    assert (root / "src" / "service.py").is_file() and (root / "src" / "sluicegate" / "features.py").is_file()
    config = json.loads((root / "src" / "sluice_service.json").read_text())
    assert config["model_tag"] == bento.model_tag and config["host"] == "127.0.0.1"
    assert [f["name"] for f in config["schema"]["fields"]] == [*NUMERIC, *CATEGORICAL, *DATES]
    assert config["labels"] == {"target": None, "id_column": None, "classes": [0, 1]}
    from sluicegate.packaging import canary_data, verify_model_artifact

    assert verify_model_artifact(bento, settings).is_file()
    canary = canary_data(bento, settings)
    assert len(canary["records"]) == 5 and len(canary["probabilities"]) == 5


@pytest.mark.slow
def test_container_image_context_holds_the_bento_its_model_and_the_pin_check(built_bento, tmp_path):
    from sluicegate.deploy.container import CONTAINERFILE, PIN_CHECK, image_ref, write_build_context
    from sluicegate.packaging import verify_model_artifact

    bento, settings = built_bento
    name, bento_version = bento.bento_tag.split(":")
    assert DeployConfig(target="docker").target == "container"  # the target's former name
    assert image_ref(bento, DeployConfig(target="container")) == f"localhost/sluicegate-{name}:{bento_version}"
    assert bento_version.startswith(f"v{bento.version}-")  # project, model version and Bento tag in the image tag
    assert image_ref(bento, DeployConfig(image="registry.example:5000/ml/churn:latest")) == \
        f"registry.example:5000/ml/churn:{bento_version}"

    ctx = write_build_context(bento, verify_model_artifact(bento, settings).parent, "localhost/base:x", tmp_path / "c")
    model_name, model_version = bento.model_tag.split(":")
    assert (ctx / "models" / model_name / model_version / "model.pkl").is_file()  # where a Bento folder's serve looks
    assert (ctx / "src" / "service.py").is_file() and (ctx / PIN_CHECK).is_file()
    lines = (ctx / CONTAINERFILE).read_text().splitlines()
    assert "FROM localhost/base:x" in lines
    assert any(line.startswith(f"RUN python {PIN_CHECK} env/python/requirements.txt") for line in lines)
    # the pin check fails on a version the environment does not have, and passes on the Bento's own pins
    import subprocess
    import sys

    pins = ctx / "env" / "python" / "requirements.txt"
    assert subprocess.run([sys.executable, str(ctx / PIN_CHECK), str(pins)]).returncode == 0
    pins.write_text("numpy==0.0.1\n")
    bad = subprocess.run([sys.executable, str(ctx / PIN_CHECK), str(pins)], capture_output=True, text=True)
    assert bad.returncode == 1 and "numpy==0.0.1 (base has " in bad.stderr


# ---------------------------------------------------------------- requests as strict as training (issue 12)
def _strict_schema(frame):
    from sluicegate.serving.schema import apply_request_rules, request_rules

    frame = frame.assign(monthly_charges=frame.monthly_charges.where(frame.index % 10 != 0))  # NaNs in training
    rules = request_rules({"tenure": {"min": 0, "max": 120}, "plan": {"allowed": ["basic", "plus"], "severity": "warn"},
                           "monthly_charges": {"type": "float"}})
    return apply_request_rules(infer_feature_schema(frame, NUMERIC, CATEGORICAL, DATES), rules, ["support_calls"])


def test_request_fields_are_required_nullable_only_when_training_had_missing_values(frame):
    from sluicegate.serving.schema import request_problems

    schema = _strict_schema(frame)
    Record = record_model(schema)
    rec = _record(frame)
    assert Record.model_validate({**rec, "monthly_charges": None}).monthly_charges is None  # NaN in training: null ok
    missing = {k: v for k, v in rec.items() if k != "monthly_charges"}
    assert request_problems(Record, [missing]) == [{"record": 0, "field": "monthly_charges", "problem": "required field is missing"}]
    declared = {k: v for k, v in rec.items() if k != "support_calls"}  # packaging.optional_fields
    assert Record.model_validate(declared).support_calls is None
    assert FeatureSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


def test_booleans_and_text_are_not_numbers_and_rules_name_the_field(frame):
    from sluicegate.serving.schema import request_problems

    Record = record_model(_strict_schema(frame))
    rec = _record(frame)
    problems = request_problems(Record, [{**rec, "monthly_charges": True}, {**rec, "tenure": -5}, {**rec, "tenure": "7"},
                                         {**rec, "plan": "platinum", "colour": 1}, "row"])
    assert {"record": 0, "field": "monthly_charges", "problem": "expected a number, got a boolean (true)"} in problems
    assert {"record": 1, "field": "tenure", "problem": "-5 is below min 0"} in problems
    assert {"record": 2, "field": "tenure", "problem": "expected a number, got text '7'"} in problems
    assert {"record": 3, "field": "colour", "problem": "unknown field (not an input of the model)"} in problems
    assert any(p["record"] == 3 and p["field"] == "plan" and "not a category seen in training" in p["problem"] for p in problems)
    assert problems[-1] == {"record": 4, "field": None, "problem": "each record must be a JSON object (got str)"}
    assert request_problems(Record, {"records": []})[0]["problem"] == "send a JSON list of records"
    text = json.dumps(problems)
    assert "pydantic" not in text and "listIODescriptor" not in text and "Value error" not in text


def test_warn_rules_answer_and_flag(frame):
    from sluicegate.serving.schema import record_warnings, request_problems

    schema = _strict_schema(frame)
    Record = record_model(schema)
    rec = {**_record(frame), "plan": "pro"}  # seen in training, but the YAML warns outside basic/plus
    assert request_problems(Record, [rec]) == []
    assert record_warnings(Record.model_validate(rec).model_dump(by_alias=True), schema) == [
        "plan: 'pro' is not allowed (allowed: 'basic', 'plus')"]


def test_unknown_optional_field_is_refused(frame):
    from sluicegate.serving.schema import apply_request_rules

    with pytest.raises(ValueError, match="packaging.optional_fields: nope not an input"):
        apply_request_rules(infer_feature_schema(frame, NUMERIC, CATEGORICAL, DATES), None, ["nope"])
# ---------------------------------------------------------------- the serving runtime (ONNX or native)
def test_runtime_auto_serves_the_graph_only_where_parity_held():
    from sluicegate.errors import DeployError
    from sluicegate.packaging import OnnxStatus, choose_runtime

    ok = OnnxStatus("ok", None, "/x/onnx", {"rows": 150, "passed": True})
    failed = OnnxStatus("failed", "parity failed on 150 holdout rows (probabilities): max |difference| 2e-3 > "
                                  "limit 1e-4", "/x/onnx", {"rows": 150, "passed": False})
    unsupported = OnnxStatus("unsupported", "features.num: FunctionTransformer has no ONNX converter", None)
    assert choose_runtime("auto", ok).name == "onnx" and "150 holdout rows" in choose_runtime("auto", ok).reason
    assert choose_runtime("onnx", ok).name == "onnx"
    assert choose_runtime("native", ok).name == "native"
    chosen = choose_runtime("auto", failed)
    assert chosen.name == "native" and chosen.reason == f"ONNX export failed: {failed.reason}"
    assert choose_runtime("auto", unsupported).reason.startswith("ONNX export unsupported: features.num")
    assert choose_runtime("auto", None).name == "native"
    for status in (failed, unsupported, None):
        with pytest.raises(DeployError, match="packaging.runtime: onnx, but .*set packaging.runtime: auto"):
            choose_runtime("onnx", status)


def test_parity_failure_says_what_differs():
    from sluicegate.onnx_export import ParityReport
    from sluicegate.packaging import parity_failure

    report = ParityReport(200, "classification", "probabilities", 0.99, 3, 1, 2e-3, 1e-4, 1.0, 1e-4, False)
    assert parity_failure(report) == ("parity failed on 200 holdout rows (probabilities): max |difference| 0.002 > "
                                      "limit 0.0001; 2 labels differ")


def test_runtime_is_a_checked_packaging_key():
    assert PackagingConfig().runtime == "auto" and PackagingConfig().access_log is False
    with pytest.raises(ValidationError, match="runtime"):
        PackagingConfig(runtime="tensorrt")


def test_service_helpers_check_json_fast_and_make_unique_ids():
    from sluicegate.serving import service

    assert service.json_is_valid(b'[{"a": 1}]') and not service.json_is_valid(b"[{not json")
    assert not service.json_is_valid(b'[{"a": NaN}]')  # json takes it (the record model names the field)
    ids = service.prediction_ids(50)
    assert len(set(ids)) == 50 and all(len(i) == 36 and i[14] == "4" for i in ids)
