"""The request schema of a served model, inferred from its training data and rebuilt as pydantic models.

Requests are held to the rules training was held to:

- every feature field is required; a field that had missing values in training may be `null` but
  must still be sent, unless `packaging.optional_fields` lists it (then it may be left out);
- numbers are JSON numbers: `true` or `"3"` for a numeric field is refused, naming the field;
- the YAML's `validation.columns` rules (`min`, `max`, `allowed`) apply with their severity:
  `error` refuses the request (400, `"weight_g: -5 is below min 0"`), `warn` answers it and adds
  the problem to the answer's `warnings`;
- refusals list `{"record", "field", "problem"}` in the user's field names (`request_problems`).
"""

from __future__ import annotations

import datetime as dt
import json
import keyword
from dataclasses import asdict, dataclass, replace
from typing import Annotated, Any, Iterable, Literal, Mapping, Optional

import pandas as pd
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

MAX_LITERAL_CATEGORIES = 500


@dataclass(frozen=True)
class FieldSpec:
    """One input column: its JSON type, whether null is allowed, and the categories seen in training."""

    name: str
    kind: Literal["int", "float", "category", "datetime", "text"]
    nullable: bool = False
    categories: tuple[Any, ...] | None = None
    optional: bool = False  # may be left out of a request (packaging.optional_fields)
    min: float | None = None  # validation.columns rules, applied to requests with their severity
    max: float | None = None
    allowed: tuple[Any, ...] | None = None
    severity: Literal["error", "warn"] = "error"

    def problem(self, value: Any) -> str | None:
        """What breaks this field's validation rule, in the user's words; None when it holds."""
        if value is None:
            return None
        if self.min is not None and isinstance(value, (int, float)) and value < self.min:
            return f"{value!r} is below min {self.min:g}"
        if self.max is not None and isinstance(value, (int, float)) and value > self.max:
            return f"{value!r} is above max {self.max:g}"
        if self.allowed is not None and value not in self.allowed:
            return f"{value!r} is not allowed (allowed: {', '.join(map(repr, self.allowed[:10]))})"
        return None


@dataclass(frozen=True)
class FeatureSchema:
    """The raw columns a model expects, in order, as JSON-serialisable data."""

    fields: tuple[FieldSpec, ...]

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.fields]

    def to_dict(self) -> dict[str, Any]:
        return {"fields": [{**asdict(f), "categories": list(f.categories) if f.categories is not None else None,
                            "allowed": list(f.allowed) if f.allowed is not None else None}
                           for f in self.fields]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        return cls(tuple(
            FieldSpec(f["name"], f["kind"], bool(f.get("nullable")),
                      tuple(f["categories"]) if f.get("categories") is not None else None,
                      bool(f.get("optional")), f.get("min"), f.get("max"),
                      tuple(f["allowed"]) if f.get("allowed") is not None else None, f.get("severity") or "error")
            for f in data["fields"]
        ))


def request_rules(columns: Mapping[str, Any]) -> str:
    """The YAML's `validation.columns` range and allowed-value rules as JSON (a model version tag).

    Stored with the version, so a served model keeps the rules its training data was checked
    against. Rules too long for a tag (huge allowed lists) are left out of it.
    """
    rules = {}
    for col, rule in columns.items():
        r = rule if isinstance(rule, Mapping) else rule.model_dump()
        kept = {k: r.get(k) for k in ("min", "max", "allowed", "severity") if r.get(k) is not None}
        if {"min", "max", "allowed"} & set(kept):
            rules[col] = kept
    text = json.dumps(rules, default=str)
    return text if len(text) <= 4900 else json.dumps({c: {k: v for k, v in r.items() if k != "allowed"}
                                                      for c, r in rules.items()})


def apply_request_rules(schema: FeatureSchema, rules: Mapping[str, Mapping[str, Any]] | str | None = None,
                        optional_fields: Iterable[str] = ()) -> FeatureSchema:
    """The schema with validation rules (from `request_rules`) and optional fields applied.

    Raises:
        ValueError: an optional field that is not an input of the model.
    """
    rules = json.loads(rules) if isinstance(rules, str) else dict(rules or {})
    optional = set(optional_fields)
    unknown = optional - set(schema.columns)
    if unknown:
        raise ValueError(f"packaging.optional_fields: {', '.join(sorted(unknown))} not an input of the model "
                         f"(inputs: {', '.join(schema.columns)})")
    fields = []
    for f in schema.fields:
        r = rules.get(f.name, {})
        fields.append(replace(f, optional=f.name in optional, min=r.get("min"), max=r.get("max"),
                              allowed=tuple(r["allowed"]) if r.get("allowed") is not None else None,
                              severity=r.get("severity", "error")))
    return FeatureSchema(tuple(fields))


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
    return Optional[tp] if spec.nullable or spec.optional else tp


def _json_number(value: Any) -> Any:
    """Booleans and text are not numbers (pydantic's lax mode would take `true` as 1 and `"3"` as 3)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got a boolean ({json.dumps(value)})")
    if isinstance(value, str):
        raise ValueError(f"expected a number, got text {value!r}")
    return value


def _rule_check(spec: FieldSpec) -> Any:
    def check(value: Any) -> Any:
        problem = spec.problem(value)
        if problem:
            raise ValueError(problem)
        return value

    return check


def record_warnings(record: Mapping[str, Any], schema: FeatureSchema) -> list[str]:
    """Warn-severity rule breaks of one record (by JSON name), as "field: problem" lines."""
    out = []
    for spec in schema.fields:
        if spec.severity == "warn":
            problem = spec.problem(record.get(spec.name))
            if problem:
                out.append(f"{spec.name}: {problem}")
    return out


def request_problems(model: type[BaseModel], payload: Any) -> list[dict[str, Any]]:
    """Why a request body of records is refused, as `[{"record", "field", "problem"}]` in the
    user's field names (no pydantic or BentoML internals); empty when every record is valid."""
    if not isinstance(payload, list):
        return [{"record": None, "field": None, "problem": "send a JSON list of records"}]
    out: list[dict[str, Any]] = []
    for i, item in enumerate(payload):
        if not isinstance(item, dict):
            out.append({"record": i, "field": None, "problem": f"each record must be a JSON object (got {type(item).__name__})"})
            continue
        try:
            model.model_validate(item)
        except ValidationError as exc:
            out += [{"record": i, "field": str(e["loc"][0]) if e["loc"] else None, "problem": _problem(e)}
                    for e in exc.errors(include_url=False)]
    return out


def _problem(error: Mapping[str, Any]) -> str:
    kind, given = error["type"], error.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (not an input of the model)"
    if kind == "literal_error":
        return f"{given!r} is not a category seen in training (expected {error.get('ctx', {}).get('expected', '')})"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind == "finite_number":
        return f"{given!r} is not a finite number"
    if kind.startswith(("int_", "float_")) or kind == "int_from_float":
        return f"expected {'an integer' if kind.startswith('int') else 'a number'}, got {given!r}"
    if kind.startswith(("date", "datetime")):
        return f"expected an ISO date or datetime, got {given!r}"
    if kind.startswith("string"):
        return f"expected text, got {given!r}"
    return f"{error['msg']} (got {given!r})"


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
        alias = {"alias": spec.name} if ident != spec.name else {}
        tp = _annotation(spec)
        checks: list[Any] = [BeforeValidator(_json_number)] if spec.kind in ("int", "float") else []
        if spec.severity == "error" and (spec.min is not None or spec.max is not None or spec.allowed is not None):
            checks.append(AfterValidator(_rule_check(spec)))
        tp = Annotated[tp, *checks] if checks else tp
        # required unless declared optional; null only where training had missing values
        fields[ident] = (tp, Field(default=None, **alias) if spec.optional else Field(**alias))
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
