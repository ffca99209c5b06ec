"""The project YAML schema: one frozen pydantic model per section, `model` a union over the registered kinds."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, PrivateAttr, field_validator, model_validator

from sluicegate.config.crosscheck import CrossCheckError, cross_field_problems
from sluicegate.schema_base import StrictModel
from sluicegate.trainers import registry

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
FILES_PATH = ("a file, a folder of partition files (read recursively, in sorted order), "
              "or a glob such as data/events/*.csv (`**` for subfolders)")


class CsvSource(StrictModel):
    kind: Literal["csv"]
    path: str = Field(min_length=1, description=FILES_PATH)
    sep: str = ","


class ParquetSource(StrictModel):
    kind: Literal["parquet"]
    path: str = Field(min_length=1, description=FILES_PATH)


SqlParam = Union[bool, int, float, str, None]


class SqlSource(StrictModel):
    kind: Literal["sql"]
    url: str | SecretRef = Field(description="SQLAlchemy URL, or {env: VAR} when it holds a password")
    query: str = Field(min_length=1, description="SQL with :name parameters, e.g. WHERE ts >= :since")
    params: dict[str, SqlParam] = Field(
        default={}, description="values bound to the query's :name parameters; '{window_start}' and the other "
                                "window placeholders are bound to the window's UTC start or end")
    window_days: float | None = Field(default=None, gt=0, description="the window: the last N days before the run")

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


class ProductionConfig(StrictModel):
    """Labelled production rows (logged live predictions joined with their labels) added to the training data."""

    enabled: bool = Field(default=False, description="off unless enabled: labels of served rows are selective")
    window_days: float | None = Field(default=30, gt=0, description="only rows predicted in the last N days")
    max_rows: int | None = Field(default=50_000, ge=1, description="only the newest N labelled rows")
    max_share: float = Field(default=0.5, gt=0, le=1,
                             description="at most this share of the data snapshot (the newest rows are kept)")
    include_late: bool = Field(default=True, description="keep labels that arrived after the late window")


class DataConfig(StrictModel):
    source: DataSource
    target: str = Field(min_length=1)
    id_column: str | None = None
    time_column: str | None = None
    production: ProductionConfig = ProductionConfig()


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
    data_docs: bool | Literal["on_failure"] = Field(
        default=True, description="Great Expectations Data Docs: true (every run), on_failure (only when a check "
        "fails or warns; skips GX's fixed cost on clean data), false")


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
    production_test_size: float = Field(
        default=0.3, gt=0, lt=1,
        description="share of the production rows labelled after the champion's data that is held out, newest first")

    @model_validator(mode="after")
    def _sizes(self) -> SplitConfig:
        if self.test_size + self.valid_size >= 0.8:
            raise ValueError(
                f"test_size + valid_size must leave at least 20% for training "
                f"(got {self.test_size} + {self.valid_size})"
            )
        return self


# ---------------------------------------------------------------- models
def _model_union() -> Any:
    """The `model:` section: a union, tagged by `kind`, of every registered trainer's settings model."""
    members = registry.config_models()
    if len(members) == 1:
        return members[0]
    return Annotated[Union[members], Field(discriminator="kind")]


ModelConfig = _model_union()


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
    return registry.label(spec)


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
    approval: Literal["never", "always", "on_retrain"] = Field(
        default="never",
        description="when a human must approve a passing candidate before it is released: never, always, or "
                    "on_retrain (runs started by a drift/performance event or the retraining flow)")
    approval_timeout_minutes: float = Field(
        default=60, gt=0, le=10080, description="an approval not given within this time rejects the candidate")


# ---------------------------------------------------------------- packaging and deploy
class PackagingConfig(StrictModel):
    """How the champion is served: batching, limits, auth, and what answers when the model fails."""

    max_batch_size: int = Field(default=100, ge=1, le=100_000)
    max_latency_ms: int = Field(default=1000, ge=50, description="generous: tight values shed load with 503")
    workers: int | Literal["auto"] = Field(
        default="auto", description="model server processes: auto is one per CPU the server may use, at most "
        "4 (an ONNX or scikit-learn model answers on one core per process); each loads the model")

    @field_validator("workers", mode="before")
    @classmethod
    def _workers_range(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 64):
            return value
        raise ValueError(f"workers must be auto or a number from 1 to 64 (got {value!r})")
    timeout_s: float = Field(default=30, gt=0)
    request_max_bytes: int = Field(default=1_000_000, ge=1024)
    auth_token: SecretRef | None = Field(default=None, description="bearer token, as {env: VAR}")
    metrics_public: bool = Field(default=False, description="serve /metrics without the token (a scraper that "
                                 "cannot send one); other routes but /livez and /readyz always need it")
    fallback: Literal["none", "previous", "constant"] = "none"
    fallback_value: float | int | str | None = None
    log_predictions: bool = True
    optional_fields: list[str] = Field(default=[], description="request fields that may be left out (others are "
                                       "required; those with missing values in training may be null)")
    access_log: bool = Field(default=False, description="BentoML's access log line per request in the server "
                             "log (the prediction log keeps every answer; errors are logged either way)")
    runtime: Literal["auto", "onnx", "native"] = Field(
        default="auto", description="what scores requests: auto (the ONNX graph where it passed parity with the "
        "native pipeline on the holdout, else native), onnx (refuse to package without a passing graph), native")

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


class ShadowConfig(StrictModel):
    """`deploy.strategy: shadow`: the candidate scores a copy of live requests off the request path."""

    share: float = Field(default=1.0, gt=0, le=1, description="share of live scoring requests copied to the candidate")
    nice: int = Field(default=10, ge=0, le=19, description="CPU niceness of the shadow candidate: the champion "
                                                           "wins the CPUs they share (back to 0 on promotion)")


class CanaryTrafficConfig(StrictModel):
    """`deploy.strategy: canary`: the candidate answers a share of live requests until it holds or breaches."""

    share: float = Field(default=0.1, gt=0, lt=1, description="share of live scoring requests the candidate answers")
    window_requests: int | None = Field(default=200, ge=1,
                                        description="candidate requests that make a full window (None: time only)")
    window_minutes: float | None = Field(default=None, gt=0, description="and/or minutes since the rollout began")
    min_requests: int = Field(default=20, ge=1, description="candidate requests before any verdict on errors/latency")
    max_error_rate_increase: float = Field(default=0.02, ge=0, le=1,
                                           description="breach: candidate error rate > champion's + this")
    max_p95_ratio: float = Field(default=2.0, ge=1, description="breach: candidate p95 latency > this x champion's")
    max_metric_drop: float = Field(default=0.05, ge=0,
                                   description="breach: candidate live metric worse than champion's by more than this")
    min_labels: int = Field(default=30, ge=1, description="labelled predictions per side before the metric counts")
    check_interval_s: float = Field(default=1.0, gt=0, le=60, description="how often the front checks for a breach")

    @model_validator(mode="after")
    def _some_window(self) -> CanaryTrafficConfig:
        if self.window_requests is None and self.window_minutes is None:
            raise ValueError("give window_requests, window_minutes or both")
        return self


class DeployConfig(StrictModel):
    """Where the champion goes after a promotion: a local process, a container, or Kubernetes manifests."""

    enabled: bool = False
    target: Literal["local", "container", "docker", "kubernetes"] = Field(
        default="local", description="local: a model server process; container (or its former name docker): the "
                                     "model image run by podman; kubernetes: manifests")
    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=1, le=65535)
    canary_rows: int = Field(default=20, ge=1, le=10_000)
    canary_tolerance: float = Field(default=1e-6, ge=0)
    readiness_timeout_s: float = Field(default=120, gt=0)
    output_dir: str | None = Field(default=None, description="manifests folder (default SLUICE_HOME/deploy/<project>)")
    image: str | None = Field(default=None, description="image repository (default localhost/sluicegate-<project>; "
                                                        "the tag is always the Bento's version)")
    replicas: int = Field(default=2, ge=1)
    hpa: HpaConfig = HpaConfig()
    strategy: Literal["direct", "shadow", "canary"] = Field(
        default="direct", description="direct: switch at once; shadow/canary: run beside the champion first (local)")
    shadow: ShadowConfig = ShadowConfig()
    canary: CanaryTrafficConfig = CanaryTrafficConfig()

    @field_validator("target")
    @classmethod
    def _docker_is_container(cls, value: str) -> str:
        return "container" if value == "docker" else value  # the target's name before it ran containers

    @model_validator(mode="after")
    def _strategy_target(self) -> DeployConfig:
        if self.strategy != "direct" and self.target not in ("local", "container"):
            raise ValueError(f"strategy: {self.strategy} needs target: local or container (got target: {self.target}); "
                             "shadow and canary rollouts run behind the front process on this machine")
        return self


# ---------------------------------------------------------------- monitoring
DRIFT_METHODS = ("ks", "wasserstein", "psi", "jensenshannon", "kl_div", "chisquare", "z", "hellinger", "tvd")


class PerformanceConfig(StrictModel):
    """Live performance: the champion's metric on logged predictions that received labels."""

    metric: str | None = Field(default=None, description="metric to watch (default gates.primary_metric)")
    floor: float | None = Field(default=None, description="worst acceptable value: a minimum, or a maximum for "
                                                         "log_loss/rmse/mae")
    max_drop: float | None = Field(default=None, gt=0, description="allowed drop below the champion's holdout value, "
                                                                  "in the metric's units")
    max_relative_drop: float | None = Field(default=0.1, gt=0, description="allowed drop as a share of the champion's "
                                                                           "holdout value (0.1 = 10% worse)")
    min_labelled_rows: int = Field(default=50, ge=1, description="fewer labelled rows in the window: no verdict")
    noise_z: float = Field(default=2.0, ge=0, description="max_drop and max_relative_drop fire only when the live "
                                                         "value is past their limit by more than this many standard "
                                                         "errors of it (the window's sampling noise; rmse, mse, mae, "
                                                         "accuracy); 0: the limit alone")


class MonitoringConfig(StrictModel):
    """Scheduled drift and performance checks on the prediction log, and when they may start a retrain."""

    schedule: str | None = Field(default=None, description="cron for the drift-check deployment, e.g. '*/30 * * * *'")
    window_rows: int = Field(default=1000, ge=1, description="check the last N logged predictions")
    window_hours: float | None = Field(default=None, gt=0, description="or only those of the last H hours")
    min_rows: int = Field(default=100, ge=1, description="fewer current rows than this: no verdict")
    max_rows: int = Field(default=100_000, ge=100, description="sample both sides down to this many rows")
    columns: list[str] | Literal["auto"] = "auto"
    num_method: Literal[DRIFT_METHODS] = Field(  # type: ignore[valid-type]
        default="ks", description="per-column test for numeric columns (always this one, whatever the sample size)")
    cat_method: Literal[DRIFT_METHODS] = Field(  # type: ignore[valid-type]
        default="chisquare", description="per-column test for categorical columns (two-sample corrected)")
    threshold: float | None = Field(default=None, gt=0, description="per-column threshold; default 0.001 for "
                                    "p-value tests (ks, chisquare, z, tvd), 0.1 for distances")
    importance: Literal["permutation", "none"] = Field(
        default="permutation", description="weigh columns by the champion's permutation importance on its holdout")
    top_k: int = Field(default=3, ge=0, description="drift in any of the k most important inputs is drift (0: off)")
    importance_share: float = Field(default=0.3, gt=0, le=1,
                                    description="drifted columns carrying this share of the importance is drift")
    drift_share: float = Field(default=0.3, gt=0, le=1, description="this share of drifted columns is drift")
    prediction_drift: bool = Field(default=True, description="drift of the champion's predictions is drift")
    consecutive: int = Field(default=2, ge=1, description="drifted checks in a row before an alert (hysteresis)")
    cooldown_minutes: float = Field(default=60, ge=0, description="no second alert or retrain within this time")
    performance: PerformanceConfig = PerformanceConfig()
    retrain: bool = Field(default=True, description="false: alerts only, the retraining flow skips")
    training_schedule: str | None = Field(default=None, description="optional cron for the training deployment")


class NotificationsConfig(StrictModel):
    """Where to tell people about drift, rejections, failed deploys and rollbacks."""

    webhook_url: str | SecretRef | None = None
    events: list[Literal["drift", "rejected", "deploy_failed", "rolled_back", "promoted", "approval_pending",
                         "canary_breached"]] = [
        "drift", "rejected", "deploy_failed", "rolled_back", "approval_pending", "canary_breached"]
    prefect_block: str | None = Field(
        default=None, description="a Prefect notification block (Slack, e-mail, webhook...): its name, or "
                                  "`type-slug/name` when several blocks share the name")
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
        problems = cross_field_problems(self)
        if problems:
            raise CrossCheckError(problems)
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


def config_json_schema() -> dict:
    """JSON Schema of the project YAML, for editors and `sluice config schema`."""
    return ProjectConfig.model_json_schema()
