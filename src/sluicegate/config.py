"""The project YAML schema and its loader: extends, overrides, and errors that name the YAML key."""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from sluicegate.errors import ConfigError

CLASSIFICATION_METRICS = ("accuracy", "f1", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})
BUNDLED_DATASETS = (
    "sklearn.breast_cancer",
    "sklearn.diabetes",
    "sklearn.wine",
    "sklearn.iris",
    "sklearn.digits",
)
SECRET_KEY = re.compile(r"(password|passwd|secret|token|api[_-]?key|credential|private[_-]?key)", re.I)
URL_WITH_PASSWORD = re.compile(r"^[a-z0-9+]+://[^/:@\s]+:[^/@\s]+@", re.I)


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors and values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(StrictModel):
    """A secret named by reference: an environment variable or a Prefect Secret block."""

    env: str | None = None
    prefect_secret: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.prefect_secret is None):
            raise ValueError("give exactly one of 'env' or 'prefect_secret'")
        return self


# ---------------------------------------------------------------- data
class CsvSource(StrictModel):
    kind: Literal["csv"]
    path: str
    sep: str = ","


class ParquetSource(StrictModel):
    kind: Literal["parquet"]
    path: str


class SqlSource(StrictModel):
    kind: Literal["sql"]
    url: str | SecretRef = Field(description="SQLAlchemy URL, or {env: VAR} when it holds a password")
    query: str = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _no_inline_password(cls, v: str | SecretRef) -> str | SecretRef:
        if isinstance(v, str) and URL_WITH_PASSWORD.match(v):
            raise ValueError("the URL holds a password; reference it as {env: VAR_NAME} instead")
        return v


class BundledSource(StrictModel):
    kind: Literal["bundled"]
    name: Literal[BUNDLED_DATASETS]  # type: ignore[valid-type]


DataSource = Annotated[
    Union[CsvSource, ParquetSource, SqlSource, BundledSource], Field(discriminator="kind")
]


class DataConfig(StrictModel):
    source: DataSource
    target: str = Field(min_length=1)
    id_column: str | None = None
    time_column: str | None = None


# ---------------------------------------------------------------- validation
Severity = Literal["error", "warn"]


class ColumnCheck(StrictModel):
    """Expectations on one column; each becomes a Great Expectations expectation."""

    type: Literal["int", "float", "number", "str", "bool", "datetime"] | None = None
    min: float | None = None
    max: float | None = None
    max_null_share: float | None = Field(default=None, ge=0, le=1)
    allowed: list[Any] | None = None
    unique: bool = False
    severity: Severity = "error"

    @model_validator(mode="after")
    def _range(self) -> ColumnCheck:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min must be <= max (got min={self.min}, max={self.max})")
        return self


class ExpectationSpec(StrictModel):
    """Any Great Expectations 1.x expectation by its snake_case type, with its kwargs."""

    type: str = Field(pattern=r"^expect_[a-z0-9_]+$")
    kwargs: dict[str, Any] = {}
    severity: Severity = "error"


class ValidationConfig(StrictModel):
    min_rows: int = Field(default=1, ge=1)
    max_rows: int | None = Field(default=None, ge=1)
    max_nan_share: float = Field(default=0.2, ge=0, le=1)
    nan_severity: Severity = "error"
    columns: dict[str, ColumnCheck] = {}
    expectations: list[ExpectationSpec] = []
    data_docs: bool = True


# ---------------------------------------------------------------- features
class NumericFeatures(StrictModel):
    columns: list[str] | Literal["auto"] = "auto"
    impute: Literal["median", "mean", "zero", "none"] = "median"
    scale: Literal["standard", "minmax", "robust", "none"] = "standard"


class CategoricalFeatures(StrictModel):
    columns: list[str] | Literal["auto"] = "auto"
    encode: Literal["onehot", "ordinal"] = "onehot"
    impute: Literal["most_frequent", "constant", "none"] = "most_frequent"
    min_frequency: int | None = Field(default=None, ge=1)


class DatetimeFeatures(StrictModel):
    columns: list[str] = []
    parts: list[Literal["year", "month", "day", "dayofweek", "hour"]] = ["year", "month", "dayofweek"]


class FeaturesConfig(StrictModel):
    numeric: NumericFeatures = NumericFeatures()
    categorical: CategoricalFeatures = CategoricalFeatures()
    datetime: DatetimeFeatures = DatetimeFeatures()
    drop: list[str] = []


class SplitConfig(StrictModel):
    method: Literal["auto", "random", "stratified", "time"] = "auto"
    test_size: float = Field(default=0.2, gt=0, lt=1)
    valid_size: float = Field(default=0.2, gt=0, lt=1)
    time_column: str | None = None

    @model_validator(mode="after")
    def _sizes(self) -> SplitConfig:
        if self.test_size + self.valid_size >= 0.8:
            raise ValueError(
                f"test_size + valid_size must leave at least 20% for training "
                f"(got {self.test_size} + {self.valid_size})"
            )
        return self


# ---------------------------------------------------------------- models
class SklearnModelConfig(StrictModel):
    kind: Literal["sklearn"]
    estimator: str
    params: dict[str, Any] = {}


class XGBoostModelConfig(StrictModel):
    kind: Literal["xgboost"]
    params: dict[str, Any] = {}
    early_stopping_rounds: int | None = Field(default=20, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class TorchModelConfig(StrictModel):
    """A tabular MLP in PyTorch, early-stopped on the validation split."""

    kind: Literal["torch"]
    hidden_layers: list[Annotated[int, Field(ge=1)]] = [64, 32]
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    dropout: float = Field(default=0.1, ge=0, lt=1)
    norm: Literal["none", "batch", "layer"] = "none"
    epochs: int = Field(default=50, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    scheduler: Literal["none", "cosine", "step", "plateau"] = "none"
    patience: int | None = Field(default=10, ge=1, description="epochs without improvement before stopping; null: never")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = Field(default=2, ge=1, description="CPU threads for torch")


ModelConfig = Annotated[
    Union[SklearnModelConfig, XGBoostModelConfig, TorchModelConfig], Field(discriminator="kind")
]
MODEL_KINDS = ("sklearn", "xgboost", "torch")


# ---------------------------------------------------------------- tuning and model selection
class SearchParam(StrictModel):
    """One tuned parameter: an int or float range, or a list of choices."""

    type: Literal["int", "float", "categorical"]
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = Field(default=None, gt=0)
    choices: list[bool | int | float | str | None] | None = None

    @model_validator(mode="after")
    def _shape(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise ValueError("'low', 'high', 'step' and 'log' apply to int and float parameters only")
            return self
        if self.choices is not None:
            raise ValueError(f"'choices' applies to categorical parameters only (this one is {self.type})")
        if self.low is None or self.high is None:
            raise ValueError(f"a{'n' if self.type == 'int' else ''} {self.type} parameter needs 'low' and 'high'")
        if self.low > self.high:
            raise ValueError(f"low must be <= high (got low={self.low}, high={self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log scale needs low > 0 (got low={self.low})")
        if self.log and self.step is not None:
            raise ValueError("'step' and 'log' cannot be combined")
        if self.type == "int" and any(
            v is not None and not float(v).is_integer() for v in (self.low, self.high, self.step)
        ):
            raise ValueError(f"an int parameter needs integer low, high and step (got {self.low}, {self.high}, {self.step})")
        return self


class TuningConfig(StrictModel):
    """Hyperparameter search with Optuna: what to search, how, and on what budget."""

    enabled: bool = True
    search_space: dict[str, SearchParam] | None = Field(
        default=None, description="parameter name to range or choices; left out: the model kind's default space"
    )
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "hyperband", "successive_halving", "none"] = "median"
    n_trials: int | None = Field(default=None, ge=1)
    timeout_s: float | None = Field(default=None, gt=0)
    n_workers: int = Field(default=1, ge=1, description="trials run in parallel against the shared storage")
    cv_folds: int = Field(default=0, ge=0, description="0: score on the validation split; k >= 2: k-fold CV")
    report_every: int | None = Field(default=None, ge=1, description="rounds/epochs between pruning checks")
    storage: str | None = Field(default=None, description="SQLAlchemy URL; default SLUICE_OPTUNA_STORAGE")

    @field_validator("search_space")
    @classmethod
    def _not_empty(cls, v: dict | None) -> dict | None:
        if v is not None and not v:
            raise ValueError("the search space is empty; list parameters, or leave search_space out "
                             "to use the model kind's default space")
        return v

    @field_validator("cv_folds")
    @classmethod
    def _folds(cls, v: int) -> int:
        if v == 1:
            raise ValueError("must be 0 (score on the validation split) or at least 2 (got 1)")
        return v

    @field_validator("storage")
    @classmethod
    def _no_inline_password(cls, v: str | None) -> str | None:
        if v is not None and URL_WITH_PASSWORD.match(v):
            raise ValueError("the URL holds a password; set SLUICE_OPTUNA_STORAGE in the environment instead")
        return v


class CandidateConfig(StrictModel):
    """Another model compared with `model` on the validation split; the best goes to the gates."""

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")
    model: ModelConfig
    tuning: TuningConfig | None = Field(
        default=None, description="keys given here override the top-level tuning section for this candidate"
    )


def candidate_label(spec: Any) -> str:
    """A readable default name for a model section: `xgboost`, `sklearn:ridge`."""
    return f"{spec.kind}:{spec.estimator}" if spec.kind == "sklearn" else spec.kind


# ---------------------------------------------------------------- gates
class Threshold(StrictModel):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> Threshold:
        if self.min is None and self.max is None:
            raise ValueError("give 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min must be <= max (got min={self.min}, max={self.max})")
        return self


class EvaluationConfig(StrictModel):
    slices: list[str] = []
    min_slice_rows: int = Field(default=20, ge=1)


class GatesConfig(StrictModel):
    primary_metric: str
    thresholds: dict[str, Threshold] = {}
    min_improvement: float = Field(
        default=0.001, ge=0, description="how much the candidate must beat the champion by"
    )
    max_train_valid_gap: float | None = Field(default=None, gt=0)
    first_model: Literal["promote", "reject"] = Field(
        default="promote", description="what to do when there is no champion yet"
    )
    slice_thresholds: dict[str, Threshold] = {}


# ---------------------------------------------------------------- packaging and deploy
class PackagingConfig(StrictModel):
    """How the champion is served: batching, limits, auth, and what answers when the model fails."""

    max_batch_size: int = Field(default=100, ge=1, le=100_000)
    max_latency_ms: int = Field(default=1000, ge=50, description="generous: tight values shed load with 503")
    workers: int = Field(default=1, ge=1, le=64)
    timeout_s: float = Field(default=30, gt=0)
    request_max_bytes: int = Field(default=1_000_000, ge=1024)
    auth_token: SecretRef | None = Field(default=None, description="bearer token, as {env: VAR}")
    fallback: Literal["none", "previous", "constant"] = "none"
    fallback_value: float | int | str | None = None
    log_predictions: bool = True

    @model_validator(mode="after")
    def _fallback_and_token(self) -> PackagingConfig:
        if self.fallback == "constant" and self.fallback_value is None:
            raise ValueError("fallback: constant needs fallback_value")
        if self.auth_token is not None and self.auth_token.env is None:
            raise ValueError("auth_token: the server reads the token from an environment variable; use {env: VAR}")
        return self


class HpaConfig(StrictModel):
    min_replicas: int = Field(default=2, ge=1)
    max_replicas: int = Field(default=6, ge=1)
    cpu_target_percent: int = Field(default=70, ge=1, le=100)

    @model_validator(mode="after")
    def _bounds(self) -> HpaConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas must be <= max_replicas (got {self.min_replicas} > {self.max_replicas})")
        return self


class DeployConfig(StrictModel):
    """Where the champion goes after a promotion: a local process, a container, or Kubernetes manifests."""

    enabled: bool = False
    target: Literal["local", "docker", "kubernetes"] = "local"
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=1, le=65535)
    canary_rows: int = Field(default=20, ge=1, le=10_000)
    canary_tolerance: float = Field(default=1e-6, ge=0)
    readiness_timeout_s: float = Field(default=120, gt=0)
    output_dir: str | None = Field(default=None, description="manifests folder (default SLUICE_HOME/deploy/<project>)")
    image: str | None = Field(default=None, description="container image (default <project>:<bento version>)")
    replicas: int = Field(default=2, ge=1)
    hpa: HpaConfig = HpaConfig()


# ---------------------------------------------------------------- monitoring
DRIFT_METHODS = ("ks", "wasserstein", "psi", "jensenshannon", "kl_div", "chisquare", "z", "hellinger", "tvd")


class MonitoringConfig(StrictModel):
    """Scheduled drift checks on the prediction log, and when they may start a retrain."""

    schedule: str | None = Field(default=None, description="cron for the drift-check deployment, e.g. '*/30 * * * *'")
    window_rows: int = Field(default=1000, ge=1, description="check the last N logged predictions")
    window_hours: float | None = Field(default=None, gt=0, description="or only those of the last H hours")
    min_rows: int = Field(default=100, ge=1, description="fewer current rows than this: no verdict")
    max_rows: int = Field(default=100_000, ge=100, description="sample both sides down to this many rows")
    columns: list[str] | Literal["auto"] = "auto"
    num_method: Literal[DRIFT_METHODS] | None = None  # type: ignore[valid-type]
    cat_method: Literal[DRIFT_METHODS] | None = None  # type: ignore[valid-type]
    threshold: float | None = Field(default=None, gt=0)
    drift_share: float = Field(default=0.3, gt=0, le=1, description="share of drifted columns that means drift")
    consecutive: int = Field(default=2, ge=1, description="drifted checks in a row before an alert (hysteresis)")
    cooldown_minutes: float = Field(default=60, ge=0, description="no second alert or retrain within this time")
    retrain: bool = True
    training_schedule: str | None = Field(default=None, description="optional cron for the training deployment")


class NotificationsConfig(StrictModel):
    """Where to tell people about drift, rejections, failed deploys and rollbacks."""

    webhook_url: str | SecretRef | None = None
    events: list[Literal["drift", "rejected", "deploy_failed", "rolled_back", "promoted"]] = [
        "drift", "rejected", "deploy_failed", "rolled_back"]
    prefect_block: str | None = Field(default=None, description="name of a Prefect notification block (e.g. Slack)")
    timeout_s: float = Field(default=5, gt=0)


# ---------------------------------------------------------------- project
class ProjectConfig(StrictModel):
    """A whole ML project: what data, which checks, which model, and when it may be promoted."""

    project: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    description: str = ""
    task: Literal["classification", "regression"]
    seed: int = 42
    data: DataConfig
    validation: ValidationConfig = ValidationConfig()
    features: FeaturesConfig = FeaturesConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig
    tuning: TuningConfig | None = None
    candidates: list[CandidateConfig] = Field(
        default=[], description="other models to compare with `model`; the best on validation goes to the gates"
    )
    evaluation: EvaluationConfig = EvaluationConfig()
    gates: GatesConfig
    packaging: PackagingConfig = PackagingConfig()
    deploy: DeployConfig = DeployConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    notifications: NotificationsConfig = NotificationsConfig()

    _root: Path = PrivateAttr(default=Path("."))
    _source: Path | None = PrivateAttr(default=None)

    @property
    def root(self) -> Path:
        """Folder that relative paths in the config are resolved against."""
        return self._root

    @property
    def source(self) -> Path | None:
        """The YAML file this config was loaded from."""
        return self._source

    @property
    def metrics(self) -> tuple[str, ...]:
        return CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS

    @property
    def split_method(self) -> str:
        if self.split.method != "auto":
            return self.split.method
        return "stratified" if self.task == "classification" else "random"

    @model_validator(mode="after")
    def _cross_checks(self) -> ProjectConfig:
        problems: list[tuple[tuple, str]] = []
        metrics = self.metrics
        if self.gates.primary_metric not in metrics:
            problems.append(((("gates", "primary_metric")), _unknown(self.gates.primary_metric, metrics, f"metric for {self.task}")))
        for name in self.gates.thresholds:
            if name not in metrics:
                problems.append((("gates", "thresholds", name), _unknown(name, metrics, f"metric for {self.task}")))
        for name in self.gates.slice_thresholds:
            if name not in metrics:
                problems.append((("gates", "slice_thresholds", name), _unknown(name, metrics, f"metric for {self.task}")))
        if self.split.method == "stratified" and self.task == "regression":
            problems.append((("split", "method"), "stratified splits need a classification task (got regression)"))
        if self.split.method == "time" and not (self.split.time_column or self.data.time_column):
            problems.append((("split", "time_column"), "a time split needs split.time_column or data.time_column"))
        problems.extend(_model_param_problems(self.model, self.task))
        problems.extend(_candidate_problems(self))
        if problems:
            raise _CrossCheckError(problems)
        return self

    def model_candidates(self) -> list[CandidateConfig]:
        """`model` then each of `candidates`, named, each with its effective tuning (None: fit as configured).

        A candidate's `tuning` keys override the top-level section; the top-level
        `search_space` names parameters of `model` only, so other candidates default to
        their kind's space unless they list their own.
        """
        out = [CandidateConfig(name=candidate_label(self.model), model=self.model, tuning=self.tuning)]
        for c in self.candidates:
            base = self.tuning.model_copy(update={"search_space": None}) if self.tuning is not None else None
            if c.tuning is not None:
                base = (base or TuningConfig()).model_copy(
                    update={k: getattr(c.tuning, k) for k in c.tuning.model_fields_set})
            out.append(CandidateConfig(name=c.name or candidate_label(c.model), model=c.model, tuning=base))
        return out

    @property
    def selects_model(self) -> bool:
        """Whether training starts with tuning or model selection (any candidates or enabled tuning)."""
        return bool(self.candidates) or any(c.tuning is not None and c.tuning.enabled for c in self.model_candidates())


class _CrossCheckError(ValueError):
    def __init__(self, problems: list[tuple[tuple, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, p))}: {m}" for p, m in problems))


def _unknown(got: str, choices: typing.Iterable[str], what: str) -> str:
    choices = list(choices)
    hint = difflib.get_close_matches(str(got), choices, n=1)
    msg = f"unknown {what} {got!r}"
    if hint:
        msg += f"; did you mean {hint[0]!r}?"
    return msg + f" (expected one of: {', '.join(choices)})"


def _model_param_problems(model: Any, task: str) -> list[tuple[tuple, str]]:
    from sluicegate.trainers import registry  # lazy: the registry imports scikit-learn

    return [(("model",) + loc, msg) for loc, msg in registry.check_model_config(model, task)]


def _candidate_problems(cfg: ProjectConfig) -> list[tuple[tuple, str]]:
    """Candidate models, budgets, and search spaces checked against each model kind's parameters."""
    from sluicegate.trainers import registry  # lazy: the registry imports scikit-learn

    problems: list[tuple[tuple, str]] = []
    for i, c in enumerate(cfg.candidates):
        problems += [(("candidates", i, "model") + loc, msg) for loc, msg in registry.check_model_config(c.model, cfg.task)]
    seen: dict[str, int] = {}
    for i, cand in enumerate(cfg.model_candidates()):
        here: tuple = () if i == 0 else ("candidates", i - 1)
        if cand.name in seen:
            problems.append(((*here, "name"), f"duplicate candidate name {cand.name!r}; give each candidate a unique 'name'"))
        seen[cand.name] = i
        tuning = cand.tuning
        if tuning is None or not tuning.enabled or registry.check_model_config(cand.model, cfg.task):
            continue  # no tuning, or a broken model section (reported above) to fix first
        own = cfg.tuning if i == 0 else cfg.candidates[i - 1].tuning
        at = (*here, "tuning") if own is not None else ("tuning",)
        if tuning.n_trials is None and tuning.timeout_s is None:
            problems.append((at, "no budget: give n_trials, timeout_s or both"))
        trainer = registry.get_trainer(cand.model.kind)
        space = tuning.search_space
        if space is None:
            if not trainer.default_search_space(cand.model, cfg.task):
                problems.append((at, f"{cand.name} has no default search space; list parameters under search_space"))
            continue
        for name, p in space.items():
            values = p.choices if p.type == "categorical" else [p.low, p.high]
            for value in dict.fromkeys(values):
                if p.type == "int":
                    value = int(value)
                found = registry.check_params(cand.model, cfg.task, {name: value})
                if found:
                    loc, msg = found[0]
                    problems.append(((*at, "search_space", name), msg if loc else f"{value!r}: {msg}"))
                    break
    return problems


# ---------------------------------------------------------------- loading
def project_root_for(config_path: Path) -> Path:
    """The folder relative paths resolve against: `SLUICE_ROOT`, or the parent of `configs/`."""
    env = os.environ.get("SLUICE_ROOT")
    if env:
        return Path(env).resolve()
    parent = config_path.resolve().parent
    return parent.parent if parent.name == "configs" else parent


def load_config(path: str | Path, overrides: typing.Sequence[str] = ()) -> ProjectConfig:
    """Load a project YAML: resolve `extends`, merge, apply `a.b=c` overrides, validate once.

    Args:
        path: the project YAML file.
        overrides: `dotted.key=value` strings; values are parsed as YAML.

    Returns:
        The validated, frozen `ProjectConfig`.

    Raises:
        ConfigError: with one `file: yaml.path: problem` line per problem.
    """
    path = Path(path)
    label = _label(path)
    raw = _load_with_extends(path, seen=())
    for item in overrides:
        _apply_override(raw, item, label)
    root = project_root_for(path)
    problems = _secret_problems(raw, ())
    problems += _path_problems(raw, root)
    if problems:
        raise ConfigError([f"{label}: {p}" for p in problems])
    try:
        cfg = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([f"{label}: {line}" for line in format_errors(exc, raw)]) from None
    cfg._root = root
    cfg._source = path.resolve()
    return cfg


def resolve_path(cfg: ProjectConfig, value: str) -> Path:
    """A config path made absolute against the project root."""
    p = Path(value)
    return p if p.is_absolute() else (cfg.root / p).resolve()


def config_hash(cfg: ProjectConfig, *sections: str) -> str:
    """A short stable hash of the whole config, or of the named sections only."""
    data = cfg.model_dump(mode="json")
    if sections:
        data = {k: data[k] for k in sections}
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _label(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _read_yaml(path: Path) -> dict:
    label = _label(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError([f"{label}: file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{label}: cannot read ({exc.strerror})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{label}{where}: invalid YAML: {problem}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{label}: the top level must be a mapping (got {type(data).__name__})"])
    return data


def _load_with_extends(path: Path, seen: tuple[Path, ...]) -> dict:
    path = path.resolve() if path.exists() else path
    if path in seen:
        chain = " -> ".join(p.name for p in (*seen, path))
        raise ConfigError([f"{_label(seen[0])}: extends: cycle ({chain})"])
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError([f"{_label(path)}: extends: must be a file name (got {parent!r})"])
    parent_path = (path.parent / parent)
    if not parent_path.exists():
        raise ConfigError([f"{_label(path)}: extends: file not found (got {parent!r})"])
    base = _load_with_extends(parent_path, (*seen, path))
    return deep_merge(base, data)


def deep_merge(base: dict, override: dict) -> dict:
    """Merge mappings recursively; lists and scalars are replaced, and so is a section whose `kind` changes."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        old = out.get(key)
        if (
            isinstance(old, dict)
            and isinstance(value, dict)
            and not ("kind" in value and "kind" in old and value["kind"] != old["kind"])
        ):
            out[key] = deep_merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _apply_override(raw: dict, item: str, label: str) -> None:
    if "=" not in item:
        raise ConfigError([f"--set {item}: expected dotted.key=value"])
    key, _, text = item.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError([f"--set {item}: empty key"])
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError([f"{label}: {key}: cannot set inside {part!r}, which is not a mapping"])
        node = nxt
    node[parts[-1]] = value


def _secret_problems(node: Any, loc: tuple) -> list[str]:
    problems: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = (*loc, key)
            if isinstance(key, str) and SECRET_KEY.search(key) and isinstance(value, (str, int, float)):
                problems.append(
                    f"{'.'.join(map(str, here))}: looks like a secret written in the file; "
                    f"reference it as {{env: VAR_NAME}} or {{prefect_secret: BLOCK_NAME}} instead"
                )
            else:
                problems += _secret_problems(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            problems += _secret_problems(value, (*loc, i))
    return problems


def _path_problems(raw: dict, root: Path) -> list[str]:
    source = (raw.get("data") or {}).get("source") if isinstance(raw.get("data"), dict) else None
    if not isinstance(source, dict) or not isinstance(source.get("path"), str):
        return []
    p = Path(source["path"])
    resolved = (p if p.is_absolute() else root / p).resolve()
    if not resolved.is_relative_to(root.resolve()):
        return [
            f"data.source.path: must stay inside the project root {root} "
            f"(got {source['path']!r}, which resolves to {resolved})"
        ]
    return []


# ---------------------------------------------------------------- error formatting
def format_errors(exc: ValidationError, raw: dict) -> list[str]:
    """Turn pydantic errors into `yaml.path: problem (got X)` lines, union tags stripped."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        ctx = err.get("ctx") or {}
        inner = ctx.get("error")
        if isinstance(inner, _CrossCheckError):
            lines += [f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in inner.problems]
            continue
        loc = _yaml_loc(err["loc"], raw)
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "kind")
        lines.append(f"{'.'.join(map(str, loc)) or '<top level>'}: {_message(err, loc, raw)}")
    return list(dict.fromkeys(lines))


def _yaml_loc(loc: tuple, raw: Any) -> tuple:
    """Drop the discriminator tags and type names pydantic inserts into error locations."""
    out: list = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and node.get("kind") == part:
            continue  # the union tag
        elif isinstance(node, (str, int, float, bool)) or node is None:
            continue  # e.g. 'str' / 'SecretRef' branch names of a plain union
        elif isinstance(part, str) and (part[:1].isupper() or part in ("str", "int", "float", "list[str]", "literal['auto']")):
            continue
        else:
            out.append(part)
            node = None
    return tuple(out)


def _message(err: dict, loc: tuple, raw: dict) -> str:
    kind = err["type"]
    got = err.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1], raw)
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1) if allowed else []
        msg = "unknown key"
        if hint:
            msg += f"; did you mean {hint[0]!r}?"
        if allowed:
            msg += f" (allowed: {', '.join(allowed)})"
        return msg
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        expected = [t.strip(" '\"") for t in str(err.get("ctx", {}).get("expected_tags", "")).split(",")]
        tag = (got or {}).get("kind") if isinstance(got, dict) else None
        if kind == "union_tag_not_found":
            return f"required key is missing (expected one of: {', '.join(expected)})"
        return _unknown(tag, expected, "kind").replace("unknown kind", "unknown value")
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        choices = [c.strip(" '\"") for c in re.split(r",| or ", expected) if c.strip(" '\"")]
        hint = difflib.get_close_matches(str(got), choices, n=1)
        msg = f"must be one of {expected}"
        if hint:
            msg += f"; did you mean {hint[0]!r}?"
        return f"{msg} (got {got!r})"
    msg = err["msg"]
    msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
    msg = msg[0].lower() + msg[1:] if msg else msg
    if not isinstance(got, (dict, list)) and "(got" not in msg:
        msg += f" (got {got!r})"
    return msg


def _allowed_keys(loc: tuple, raw: dict) -> list[str]:
    model: Any = ProjectConfig
    node: Any = raw
    for part in loc:
        model = _unwrap(model, node)
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(part)
            if field is None:
                return []
            model = field.annotation
        else:
            origin = typing.get_origin(model)
            args = typing.get_args(model)
            if origin in (dict, list) and args:
                model = args[-1]
            else:
                return []
        node = node.get(part) if isinstance(node, dict) else (node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None)
    model = _unwrap(model, node)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _unwrap(tp: Any, node: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            if isinstance(node, dict) and "kind" in node:
                for m in models:
                    kf = m.model_fields.get("kind")
                    if kf is not None and node["kind"] in typing.get_args(kf.annotation):
                        return m
            if len(models) >= 1 and isinstance(node, dict):
                return models[0]
            return members[0] if members else tp
        else:
            return tp


def config_json_schema() -> dict:
    """JSON Schema of the project YAML, for editors and `sluice config schema`."""
    return ProjectConfig.model_json_schema()
