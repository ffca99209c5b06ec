"""The project config: schema (`schema`), loading (`loader`), error lines (`messages`), source checks (`check`).

Everything public is re-exported here, so callers write `from sluicegate.config import X`.
The model kinds' settings models live with their trainers (`sluicegate.trainers.*`) and are
re-exported for the same reason.
"""

from sluicegate.config.check import check_sources
from sluicegate.config.crosscheck import SQL_WINDOW_PLACEHOLDERS
from sluicegate.config.loader import (
    config_hash,
    deep_merge,
    load_config,
    project_root_for,
    resolve_path,
)
from sluicegate.config.messages import format_errors
from sluicegate.config.schema import (
    BUNDLED_DATASETS,
    CLASSIFICATION_METRICS,
    DRIFT_METHODS,
    LOWER_IS_BETTER,
    REGRESSION_METRICS,
    SECRET_KEY,
    URL_WITH_PASSWORD,
    BundledSource,
    CanaryTrafficConfig,
    CandidateConfig,
    CategoricalFeatures,
    ColumnCheck,
    CsvSource,
    DataConfig,
    DataSource,
    DatetimeFeatures,
    DeployConfig,
    EvaluationConfig,
    ExpectationSpec,
    FeaturesConfig,
    GatesConfig,
    HpaConfig,
    ModelConfig,
    MonitoringConfig,
    NotificationsConfig,
    NumericFeatures,
    PackagingConfig,
    ParquetSource,
    ProductionConfig,
    ProjectConfig,
    SearchParam,
    SecretRef,
    Severity,
    ShadowConfig,
    SplitConfig,
    SqlSource,
    Threshold,
    TuningConfig,
    ValidationConfig,
    candidate_label,
    config_json_schema,
)
from sluicegate.schema_base import StrictModel
from sluicegate.trainers.mlp import TorchModelConfig
from sluicegate.trainers.sk import SklearnModelConfig
from sluicegate.trainers.xgb import XGBoostModelConfig

__all__ = [
    "BUNDLED_DATASETS", "CLASSIFICATION_METRICS", "DRIFT_METHODS", "LOWER_IS_BETTER", "REGRESSION_METRICS",
    "SECRET_KEY", "SQL_WINDOW_PLACEHOLDERS", "URL_WITH_PASSWORD", "BundledSource", "CandidateConfig", "CategoricalFeatures", "ColumnCheck",
    "CsvSource", "DataConfig", "DataSource", "DatetimeFeatures", "CanaryTrafficConfig", "DeployConfig", "ShadowConfig", "EvaluationConfig",
    "ExpectationSpec", "FeaturesConfig", "GatesConfig", "HpaConfig", "ModelConfig", "MonitoringConfig",
    "NotificationsConfig", "NumericFeatures", "PackagingConfig", "ParquetSource", "ProductionConfig", "ProjectConfig", "SearchParam",
    "SecretRef", "Severity", "SklearnModelConfig", "SplitConfig", "SqlSource", "StrictModel", "Threshold",
    "TorchModelConfig", "TuningConfig", "ValidationConfig", "XGBoostModelConfig", "candidate_label",
    "check_sources", "config_hash", "config_json_schema", "deep_merge", "format_errors", "load_config", "project_root_for",
    "resolve_path",
]
