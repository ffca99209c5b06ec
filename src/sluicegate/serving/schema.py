"""The request schema of a served model, inferred from its training data and rebuilt as pydantic models."""

from __future__ import annotations

import datetime as dt
import keyword
from dataclasses import asdict, dataclass
from typing import Any, Literal, Optional

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, create_model

MAX_LITERAL_CATEGORIES = 500


@dataclass(frozen=True)
class FieldSpec:
    """One input column: its JSON type, whether null is allowed, and the categories seen in training."""

    name: str
    kind: Literal["int", "float", "category", "datetime", "text"]
    nullable: bool = False
    categories: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class FeatureSchema:
    """The raw columns a model expects, in order, as JSON-serialisable data."""

    fields: tuple[FieldSpec, ...]

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.fields]

    def to_dict(self) -> dict[str, Any]:
        return {"fields": [{**asdict(f), "categories": list(f.categories) if f.categories is not None else None}
                           for f in self.fields]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        return cls(tuple(
            FieldSpec(f["name"], f["kind"], bool(f.get("nullable")),
                      tuple(f["categories"]) if f.get("categories") is not None else None)
            for f in data["fields"]
        ))


def infer_feature_schema(
    frame: pd.DataFrame, numeric: tuple[str, ...], categorical: tuple[str, ...], datetime: tuple[str, ...] = (),
) -> FeatureSchema:
    """Build the request schema from the training frame and the model's feature columns.

    Args:
        frame: the training data (at least the feature columns).
        numeric: numeric feature columns; integer dtypes without nulls become `int`.
        categorical: categorical columns; their training values become the allowed literals.
        datetime: datetime columns, accepted as ISO dates or datetimes.

    Returns:
        A `FeatureSchema` listing every column in the order the model reads them.

    Raises:
        KeyError: a feature column is not in the frame.
    """
    fields: list[FieldSpec] = []
    for col in numeric:
        s = frame[col]
        nullable = bool(s.isna().any())
        kind = "int" if pd.api.types.is_integer_dtype(s) and not pd.api.types.is_bool_dtype(s) else "float"
        fields.append(FieldSpec(col, kind, nullable))
    for col in categorical:
        s = frame[col]
        values = sorted({_native(v) for v in s.dropna().unique()}, key=lambda v: (str(type(v)), str(v)))
        if len(values) > MAX_LITERAL_CATEGORIES:
            fields.append(FieldSpec(col, "text", bool(s.isna().any())))
        else:
            fields.append(FieldSpec(col, "category", bool(s.isna().any()), tuple(values)))
    for col in datetime:
        fields.append(FieldSpec(col, "datetime", bool(frame[col].isna().any())))
    return FeatureSchema(tuple(fields))


def _native(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _annotation(spec: FieldSpec) -> Any:
    if spec.kind == "int":
        tp: Any = int
    elif spec.kind == "float":
        tp = float
    elif spec.kind == "category":
        tp = Literal[spec.categories]  # type: ignore[valid-type]
    elif spec.kind == "datetime":
        tp = dt.datetime | dt.date
    else:
        tp = str
    return Optional[tp] if spec.nullable else tp


class RecordBase(BaseModel):
    """What every input record allows: no extra fields, no NaN or infinity, JSON names; immutable."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True, frozen=True)


def record_model(schema: FeatureSchema, name: str = "Record", id_column: str | None = None,
                 base: type[BaseModel] | None = None) -> type[BaseModel]:
    """A pydantic model of one input record: exact field names, finite numbers, known categories, no extras.

    Column names that are not Python identifiers are kept as JSON names through aliases.
    `id_column` (the project's `data.id_column`), when it is not a feature, is an optional extra
    field (string or integer): the model never reads it, the prediction log keeps it so labels
    can be matched by it later. `base` is a parent class: `RecordBase` or a subclass of it.
    """
    fields: dict[str, Any] = {}
    for i, spec in enumerate(schema.fields):
        ident = _ident(spec.name, f"f{i}")
        field = Field(alias=spec.name) if ident != spec.name else Field()
        if not spec.nullable:
            fields[ident] = (_annotation(spec), field)
        else:
            fields[ident] = (_annotation(spec), Field(default=None, alias=spec.name) if ident != spec.name else None)
    if id_column and id_column not in schema.columns:
        ident = _ident(id_column, "record_id")
        fields[ident] = (Optional[int | str], Field(default=None, alias=id_column) if ident != id_column else None)
    return create_model(name, __base__=base or RecordBase, **fields)


def _ident(name: str, fallback: str) -> str:
    ok = name.isidentifier() and not keyword.iskeyword(name) and not name.startswith("_") \
        and name not in ("model_config", "model_fields")
    return name if ok else fallback


def records_frame(records: list[Any], schema: FeatureSchema) -> pd.DataFrame:
    """A DataFrame in the model's column order from validated records (dates as ISO strings)."""
    rows = [r.model_dump(by_alias=True) if isinstance(r, BaseModel) else dict(r) for r in records]
    frame = pd.DataFrame(rows, columns=schema.columns)
    for spec in schema.fields:
        if spec.kind == "datetime":
            frame[spec.name] = frame[spec.name].map(lambda v: v.isoformat() if hasattr(v, "isoformat") else v)
        elif spec.kind in ("int", "float"):
            frame[spec.name] = pd.to_numeric(frame[spec.name], errors="coerce").astype("float64") \
                if spec.nullable or spec.kind == "float" else frame[spec.name]
    return frame
