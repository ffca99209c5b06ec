"""BentoML service template, copied verbatim into each Bento as service.py and configured by sluice_service.json."""

# No `from __future__ import annotations` here: BentoML reads the API signatures at class
# creation, and the record type is built at import from the JSON config, not named in source.

import atexit
import contextvars
import hmac
import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional, Union

import bentoml
from pydantic import BaseModel, PrivateAttr

from sluicegate.data import hash_file
from sluicegate.errors import FeedbackError, ServiceUnreachableError
from sluicegate.serving.feedback import LATE_AFTER_DAYS, await_logged, id_text, parse_feedback, record_feedback
from sluicegate.serving.predlog import (
    TRAFFIC_HEADER,
    TRAFFIC_TAGS,
    LabelSchema,
    PredictionEvent,
    PredictionLog,
    log_store,
    register_label_schema,
)
from sluicegate.serving.schema import (
    FeatureSchema,
    RecordBase,
    record_model,
    record_warnings,
    records_frame,
    request_problems,
)

log = logging.getLogger("sluicegate.service")

CONFIG_FILE = "sluice_service.json"
CONFIG_ENV = "SLUICE_SERVICE_CONFIG"
# Health probes are the only routes open to anyone: with `packaging.auth_token` set, everything
# else (the API, /metadata, /docs.json with its input schema and categories, /, /metrics unless
# `packaging.metrics_public`) asks for the bearer token.
PUBLIC_PATHS = ("/readyz", "/livez", "/healthz")
# routes BentoML answers itself; past the token check they go straight through
INFO_PATHS = ("/metrics", "/docs.json", "/")
MAX_JSON_DEPTH = 32  # records are flat objects in a list: depth 2; deeper bodies are refused before parsing
RECORD_ROUTES = ("/predict", "/predict_proba")  # bodies that are lists of input records
LATE_DAYS_ENV = "SLUICE_FEEDBACK_LATE_DAYS"
# The request's traffic tag (X-Sluice-Traffic), set by the middleware. Adaptive batching runs the
# API method in another task, so records are stamped with it when they are validated (below),
# still inside the request's context, and the tag travels with each record into the batch.
TRAFFIC: contextvars.ContextVar[str] = contextvars.ContextVar("sluice_traffic", default="live")
# Shadow copies carry the champion's prediction ids (X-Sluice-Prediction-Id, comma-separated, one
# per record), so both rows of a prediction share its id; honoured for shadow traffic only. Held as
# [ids, next index]; when a body is validated a second time (the refusal path) the index is rewound.
GIVEN_IDS: contextvars.ContextVar[Optional[list]] = contextvars.ContextVar("sluice_given_ids", default=None)
# The request's records as the middleware validated them (an instance of the API's input model);
# BentoML's input parsing takes them from here instead of validating the body a second time.
VALIDATED: contextvars.ContextVar[Any] = contextvars.ContextVar("sluice_validated", default=None)
# route -> answer(records) -> JSON bytes, registered by a service instance scoring with the ONNX graph:
# the guard answers those routes itself once it validated the body (see `GuardMiddleware`).
FAST_ROUTES: dict[str, Any] = {}


MAX_AUTO_WORKERS = 4


def server_workers(setting: Any) -> int:
    """`packaging.workers` as a process count: `auto` is one per CPU this process may run on, at most
    MAX_AUTO_WORKERS (decided where the server starts, so a Bento built on a laptop fits the host it runs on)."""
    if setting in (None, "auto"):
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 1
        return max(1, min(cpus, cgroup_cpus() or cpus, MAX_AUTO_WORKERS))
    return int(setting)


def cgroup_cpus(path: str = "/sys/fs/cgroup/cpu.max") -> Optional[int]:
    """The CPUs a cgroup v2 quota allows (a container's or a pod's CPU limit, rounded up), None when unlimited."""
    try:
        quota, period = Path(path).read_text().split()[:2]
        return None if quota == "max" else max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        return None


def load_service_config() -> Optional[dict]:
    """The builder's JSON config: `$SLUICE_SERVICE_CONFIG`, or sluice_service.json beside this file."""
    path = Path(os.environ.get(CONFIG_ENV) or Path(__file__).with_name(CONFIG_FILE))
    if not path.is_file():
        return None
    return json.loads(path.read_text())




class Prediction(BaseModel):
    """One answer: the prediction, the model version that gave it, and whether a fallback answered.

    `prediction_id` names this answer in the prediction log; send it back with the true label
    to POST /feedback.
    """

    prediction: Optional[Union[int, float, str, bool]] = None
    model_version: str
    fallback: bool = False
    error: Optional[str] = None
    prediction_id: Optional[str] = None
    warnings: Optional[list[str]] = None  # warn-severity validation rules this record broke


class Probabilities(BaseModel):
    """Class probabilities keyed by class label, and the id of this answer for POST /feedback."""

    probabilities: Optional[dict[str, float]] = None
    model_version: str
    fallback: bool = False
    error: Optional[str] = None
    prediction_id: Optional[str] = None
    warnings: Optional[list[str]] = None  # warn-severity validation rules this record broke


class TaggedRecord(RecordBase):
    """An input record that remembers the traffic tag of the request it came in."""

    _traffic: str = PrivateAttr(default="live")
    _given_id: Optional[str] = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        self._traffic = TRAFFIC.get()
        given = GIVEN_IDS.get()
        if given is not None and given[1] < len(given[0]):
            self._given_id, given[1] = given[0][given[1]], given[1] + 1


def _private(record: Any, name: str) -> Any:
    """A private attribute of a validated record (`TaggedRecord`), None when it has none: read from
    pydantic's private dict (its `__getattr__` costs microseconds per record, more when missing)."""
    return (getattr(record, "__pydantic_private__", None) or {}).get(name)


class GuardMiddleware:
    """An optional bearer token on every route but the health probes; JSON-only bodies with one
    Content-Type, under a size and nesting limit; GET /metadata.

    The token is read from the environment variable the config names, at start-up; when that
    variable is unset the guarded routes answer 401 (fail closed) instead of serving openly.
    """

    def __init__(self, app: Any, max_bytes: int, token_env: Optional[str], metadata: dict,
                 metrics_public: bool = False, record_specs: Optional[dict] = None):
        self.app = app
        # route -> BentoML input model of an API whose body is a list of records (see `use_validated_input`)
        self.record_specs = dict(record_specs or {})
        self.record_types = {route: _item_type(spec) for route, spec in self.record_specs.items()}
        self.max_bytes = max_bytes
        self.token_env = token_env
        self.token = os.environ.get(token_env, "") if token_env else None
        self.metadata = json.dumps(metadata).encode()
        self.metrics_public = metrics_public

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and self.token_env is not None:  # no websocket routes: refuse
            await receive()
            return await send({"type": "websocket.close", "code": 1008})
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        raw_headers = scope.get("headers", [])
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw_headers}
        if self.token_env is not None and not (self.metrics_public and scope["path"] == "/metrics"):
            refused = self._unauthorized(headers)
            if refused is not None:
                return await _json(send, 401, refused, extra=[(b"www-authenticate", b"Bearer")])
        if scope["path"] in INFO_PATHS:
            return await self.app(scope, receive, send)
        ctypes = [v.decode("latin-1") for k, v in raw_headers if k.lower() == b"content-type"]
        if len(ctypes) > 1:  # this guard and BentoML could each read a different one
            return await _json(send, 400, {"error": "ambiguous content type", "detail":
                                           f"send one Content-Type header (got {len(ctypes)}: {', '.join(ctypes)})"})
        tag = headers.get(TRAFFIC_HEADER, "live").strip().lower() or "live"
        if tag not in TRAFFIC_TAGS:
            return await _json(send, 400, {"error": "unknown traffic tag", "detail":
                                           f"X-Sluice-Traffic must be one of {', '.join(TRAFFIC_TAGS)} (got {tag!r})"})
        token = TRAFFIC.set(tag)
        ids = headers.get("x-sluice-prediction-id", "") if tag == "shadow" else ""
        given = [i.strip() for i in ids.split(",") if i.strip()][:100_000]
        ids_token = GIVEN_IDS.set([given, 0] if given else None)
        try:
            return await self._guarded(scope, receive, send, headers)
        finally:
            TRAFFIC.reset(token)
            GIVEN_IDS.reset(ids_token)

    def _unauthorized(self, headers: dict[str, str]) -> Optional[dict]:
        """The 401 body when the request lacks the right bearer token, else None."""
        given = headers.get("authorization", "")
        expected = f"Bearer {self.token}"
        if self.token and hmac.compare_digest(given.encode(), expected.encode()):
            return None
        why = f"server has no token: set {self.token_env}" if not self.token else "missing or wrong bearer token"
        return {"error": "unauthorized", "detail": why}

    async def _guarded(self, scope: dict, receive: Any, send: Any, headers: dict[str, str]) -> None:
        if scope["method"] == "GET" and scope["path"] == "/metadata":
            return await _raw(send, 200, self.metadata)
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        ctype = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype != "application/json":
            return await _json(send, 415, {"error": "unsupported media type",
                                           "detail": f"send application/json (got {ctype})"})
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _json(send, 413, _too_large(int(declared), self.max_bytes))
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await _json(send, 413, _too_large(size, self.max_bytes))
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:  # orjson (C, no recursion) first: a flat list of records needs no depth count
            parsed = _ORJSON.loads(body or b"null")
            flat = flat_records(parsed)
        except Exception:
            parsed, flat = _UNPARSED, False
        # counted before the json module or pydantic see it: deep nesting costs them dearly
        if not flat and json_too_deep(body, MAX_JSON_DEPTH):
            return await _json(send, 400, {"error": "invalid JSON", "detail": f"nested deeper than {MAX_JSON_DEPTH} "
                                           "levels; send a JSON list of flat records"})
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        spec = self.record_specs.get(scope["path"])
        if spec is not None:
            # The records' one validation: BentoML's own (its input model, from the JSON text), done here
            # and handed to it. Only a refused body is looked at again, to say why in the user's terms.
            # (BentoML's model_validate_json parses with the json module: orjson is several times faster)
            try:
                validated = spec.model_validate(parsed if parsed is not _UNPARSED else json.loads(body or b"null"))
            except (ValueError, RecursionError):  # pydantic's ValidationError, or JSON that does not parse
                validated = None
            fast = FAST_ROUTES.get(scope["path"])
            if validated is not None and fast is not None:
                # The ONNX graph's APIs answered here: BentoML's routing, endpoint and response layers cost
                # more than the model (~30% of a one-row request's CPU). Its metrics, timeout and concurrency
                # middlewares run outside this one and still count the request.
                try:
                    answer = fast(validated.root)
                except Exception as exc:
                    log.exception("scoring failed on %s", scope["path"])
                    return await _json(send, 500, {"error": f"{type(exc).__name__}: {exc}"[:500]})
                return await _raw(send, 200, answer, MERGE_OK)
            if validated is not None:
                token = VALIDATED.set(validated)
                try:
                    return await self.app(scope, replay, send)
                finally:
                    VALIDATED.reset(token)
        if not json_is_valid(body or b"null"):  # BentoML answers malformed JSON with a bare 500
            try:
                json.loads(body)
            except (ValueError, RecursionError) as exc:  # say what is wrong instead
                return await _json(send, 400, {"error": "invalid JSON", "detail": str(exc)[:300]})
        # the API's record model; else the one defined once the service config is loaded
        record_type = self.record_types.get(scope["path"]) or globals().get("Record")
        if scope["path"] in RECORD_ROUTES and record_type is not None:  # refusals in the user's terms
            problems = request_problems(record_type, _loads(body or b"null"))
            if problems:
                return await _json(send, 400, {"error": "invalid records", "detail": problems})
        given = GIVEN_IDS.get()
        if given is not None:
            given[1] = 0  # the records are validated again below (BentoML): the ids start over
        return await self.app(scope, replay, send)


# On answers of the APIs that score each request as it comes (no adaptive batching): the front may merge
# small requests that wait for this server into one (`sluicegate.deploy.proxy`). BentoML's adaptive
# batching (the native runtime) does that itself, better with the requests in flight as they came.
MERGE_OK = [(b"x-sluice-merge", b"ok")]

_UNPARSED = object()  # orjson refused the body (NaN, Infinity, huge integers, or not JSON at all)


def flat_records(value: Any) -> bool:
    """Whether a parsed body is a list of objects whose values are all scalars (two levels deep)."""
    if not isinstance(value, list):
        return False
    for record in value:
        if not isinstance(record, dict):
            return False
        for v in record.values():
            if isinstance(v, (list, dict)):
                return False
    return True


def _item_type(spec: Any) -> Any:
    """The record model of an input model whose root is a list of records, or None."""
    import typing

    field = getattr(spec, "model_fields", {}).get("root")
    args = typing.get_args(field.annotation) if field is not None else ()
    return args[0] if len(args) == 1 and isinstance(args[0], type) else None


def _loads(body: bytes) -> Any:
    """The parsed body: orjson when it accepts it, json otherwise (NaN and Infinity)."""
    try:
        return _ORJSON.loads(body)
    except Exception:
        return json.loads(body)


def json_is_valid(body: bytes) -> bool:
    """Whether the body parses as strict JSON (orjson, several times faster than json).

    False is not a verdict: json also takes NaN and Infinity (the record model then names the
    field), so the caller asks json about what orjson refused.
    """
    try:
        _ORJSON.loads(body)
        return True
    except Exception:
        return False


try:
    import orjson as _ORJSON
except ImportError:  # an image without orjson: json checks every body
    class _ORJSON:  # type: ignore[no-redef]
        @staticmethod
        def loads(body: bytes) -> None:
            raise ValueError("no orjson")

        @staticmethod
        def dumps(value: Any) -> None:
            raise TypeError("no orjson")


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_too_deep(body: bytes, limit: int) -> bool:
    """Whether a JSON text nests arrays/objects more than `limit` deep, without parsing it.

    Strings are cut out first (a bracket inside a string does not nest); what remains is only
    brackets, counted in one pass that stops at the first level over the limit.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if brackets[:1] == b"[" and brackets[-1:] == b"]" and not brackets[1:-1].replace(b"{}", b""):
        return False  # a list of flat records: two deep
    depth = 0
    for b in brackets:
        if b in (91, 123):  # [ {
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _too_large(size: int, limit: int) -> dict:
    return {"error": "request too large", "detail": f"body is over {limit} bytes (got at least {size}); send fewer records"}


async def _json(send: Any, status: int, payload: dict, extra: list | None = None) -> None:
    await _raw(send, status, json.dumps(payload).encode(), extra)


async def _raw(send: Any, status: int, body: bytes, extra: list | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def answer_json(outputs: list[dict], model: type[BaseModel]) -> Any:
    """The answers as the list of `model` would be written (same fields, order and values), built with
    orjson; None when a value is not plainly JSON (then the pydantic models answer, as before).

    BentoML validates a returned list into its output model, dumps it once to look at it and once
    more to write it: for 100 records several milliseconds, ten times what orjson takes. A response
    returned as such goes out as it is. Only for APIs without adaptive batching, which must return
    lists it can split.
    """
    from starlette.responses import Response

    body = answer_bytes(outputs, model)
    return None if body is None else Response(body, media_type="application/json")


def answer_bytes(outputs: list[dict], model: type[BaseModel]) -> Optional[bytes]:
    """The JSON of `answer_json`; None when a value is not plainly JSON."""
    fields = [(name, f.get_default()) for name, f in model.model_fields.items()]
    rows = []
    for o in outputs:
        row = {name: o.get(name, default) for name, default in fields}
        for value in row.values():
            if not _plain_json(value):
                return None
        rows.append(row)
    try:
        return _ORJSON.dumps(rows)
    except Exception:
        return None


_SCALARS = (str, int, float, bool, type(None))


def _plain_json(value: Any) -> bool:
    """Whether pydantic would write this value unchanged: JSON scalars, a list of text, {text: float}."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is list:
        return all(type(v) is str for v in value)
    if kind is dict:  # probabilities: pydantic writes an int as a float
        return all(type(k) is str and type(v) is float for k, v in value.items())
    return False


def prediction_ids(n: int) -> list[str]:
    """`n` random UUID4 strings from one read of the OS's random source (uuid4 reads it once per id)."""
    raw = os.urandom(16 * n)
    return [str(uuid.UUID(bytes=raw[i:i + 16], version=4)) for i in range(0, 16 * n, 16)]


def use_validated_input(service: Any) -> dict:
    """Let each API's input parsing take the records GuardMiddleware validated, instead of validating again.

    Returns route -> input model for the record APIs (the middleware's `record_specs`). A request
    the middleware did not validate (no record route, or a body it passed on refused) is parsed
    by BentoML as before.
    """
    specs = {}
    for method in service.apis.values():
        if method.route not in RECORD_ROUTES:
            continue
        spec = method.input_spec
        specs[method.route] = spec
        parse = spec.from_http_request
        if getattr(parse, "_sluice_validated", False):
            continue

        async def from_http_request(cls: Any, request: Any, serde: Any, _parse: Any = parse) -> Any:
            validated = VALIDATED.get()
            if isinstance(validated, cls):
                return validated
            return await _parse(request, serde)

        from_http_request._sluice_validated = True  # type: ignore[attr-defined]
        spec.from_http_request = classmethod(from_http_request)
    return specs


def cache_io_schemas(service: Any) -> None:
    """Build the JSON schema of each API's input and output model once, not on every request.

    BentoML asks a root-typed input (`records: list[Record], /`) and output for their JSON schema
    on every request, to tell a JSON body from text and to pick the response's media type; pydantic
    generates it anew each time: 5-10 ms per request for a 19-field record, most of a one-row request.
    The models are fixed once the service is built, so the plain call is answered from a cache; calls
    with arguments (the OpenAPI document's) still reach pydantic.
    """
    for method in service.apis.values():
        for spec in (method.input_spec, method.output_spec):
            generate = spec.model_json_schema
            if getattr(generate, "_sluice_cached", False):
                continue
            built: dict = {}

            def model_json_schema(cls: Any, *args: Any, _generate: Any = generate, _built: dict = built,
                                  **kwargs: Any) -> dict:
                if args or kwargs:
                    return _generate(*args, **kwargs)
                if "schema" not in _built:
                    _built["schema"] = _generate()
                return _built["schema"]

            model_json_schema._sluice_cached = True  # type: ignore[attr-defined]
            spec.model_json_schema = classmethod(model_json_schema)


CONFIG = load_service_config()

if CONFIG is not None:
    SCHEMA = FeatureSchema.from_dict(CONFIG["schema"])
    LABELS = CONFIG.get("labels") or {}
    ID_COLUMN = LABELS.get("id_column")
    Record = record_model(SCHEMA, id_column=ID_COLUMN, base=TaggedRecord)
    PACK = CONFIG["packaging"]
    VERSION = str(CONFIG["version"])
    IS_CLASSIFIER = CONFIG["task"] == "classification"
    CLASSES = LABELS.get("classes", (CONFIG.get("metadata") or {}).get("classes"))
    LABEL_SCHEMA = LabelSchema(CONFIG["task"], LABELS.get("target"),
                               tuple(CLASSES) if CLASSES is not None else None, ID_COLUMN, VERSION)
    # "onnx": the pipeline's ONNX graph answers (it passed parity at packaging), "native": the pickled pipeline
    RUNTIME = (CONFIG.get("runtime") or {}).get("name", "native")
    # The ONNX graph answers one row in tens of microseconds, so its API skips adaptive batching (whose
    # dispatcher wait and thread hop cost more than the model) and runs on the event loop; the native
    # pipeline (milliseconds per call, mostly fixed cost) keeps adaptive batching.
    BATCHING = {} if RUNTIME == "onnx" else {"batchable": True, "max_batch_size": PACK["max_batch_size"],
                                             "max_latency_ms": PACK["max_latency_ms"]}

    @bentoml.service(
        name=CONFIG["service_name"],
        workers=server_workers(PACK.get("workers", 1)),
        traffic={"timeout": PACK["timeout_s"]},
        http={"host": CONFIG.get("host", "127.0.0.1"), "port": int(CONFIG.get("port", 3000))},
        labels={"project": CONFIG["project"], "model_version": VERSION},
        # No span per request: nothing here exports traces (sample rate 0), yet BentoML's OpenTelemetry
        # middleware built several spans a request (~15% of a one-row request). BentoML's access log line
        # per request is optional (packaging.access_log): the prediction log keeps every answer.
        tracing={"excluded_urls": [".*"]},
        logging={"access": {"enabled": bool(PACK.get("access_log", False))}},
    )
    class SluiceService:
        """Scores records with the packaged model version; falls back as configured when it fails."""

        model_ref = bentoml.models.BentoModel(CONFIG["model_tag"])

        def __init__(self) -> None:
            import joblib

            stored = self.model_ref
            model_file = Path(stored.path_of("model.pkl"))
            digest = hash_file(model_file)
            if digest != CONFIG["model_sha256"]:
                # a refused start makes the deploy fail and leaves the old model serving
                raise RuntimeError(f"model artifact {model_file} is corrupted: sha256 {digest[:12]} "
                                   f"!= {CONFIG['model_sha256'][:12]} recorded at build time")
            self.model = joblib.load(model_file)
            self.onnx = None
            if RUNTIME == "onnx":
                from sluicegate.onnx_runtime import OnnxExport, OnnxPredictor

                onnx_dir = Path(stored.path_of("onnx"))
                digest = hash_file(onnx_dir / "model.onnx") if (onnx_dir / "model.onnx").is_file() else "missing"
                expected = CONFIG["runtime"].get("onnx_sha256") or ""
                if digest != expected:
                    raise RuntimeError(f"ONNX graph {onnx_dir / 'model.onnx'} is corrupted: sha256 {digest[:12]} "
                                       f"!= {expected[:12]} recorded at build time")
                self.onnx = OnnxPredictor(OnnxExport.load(onnx_dir), threads=1)
            self.previous = None
            self.previous_version = CONFIG.get("previous_version")
            prev_file = Path(stored.path_of("previous.pkl"))
            if PACK["fallback"] == "previous" and prev_file.exists():
                try:
                    self.previous = joblib.load(prev_file)
                except Exception:  # a broken fallback must not stop the main model from serving
                    log.exception("previous model v%s could not be loaded; no fallback", self.previous_version)
            self.metrics = service_metrics()
            self.plog = None
            self.feedback_db = None
            self.feedback_lock = threading.Lock()
            self.late_after_days = float(os.environ.get(LATE_DAYS_ENV) or LATE_AFTER_DAYS)
            if PACK["log_predictions"]:
                from sluicegate.settings import load_settings, make_private

                # SQLite under SLUICE_HOME, or PostgreSQL when SLUICE_PREDICTION_LOG_URL is set here (never in the bento)
                store = log_store(CONFIG["project"], make_private(load_settings().home))  # raw inputs: owner only
                self.plog = PredictionLog(store, on_written=self.metrics["written"].inc,
                                          on_dropped=self.metrics["dropped"].inc)
                atexit.register(self.plog.close)
                self.feedback_db = store.connect()  # its own connection: the log writer owns the other
                register_label_schema(self.feedback_db, LABEL_SCHEMA)
            if self.onnx is not None:
                FAST_ROUTES["/predict"] = lambda records: self._answer_bytes("predict", records, Prediction)
                if IS_CLASSIFIER:
                    FAST_ROUTES["/predict_proba"] = \
                        lambda records: self._answer_bytes("predict_proba", records, Probabilities)
            log.info("serving %s v%s (%s) with the %s runtime", CONFIG["project"], VERSION, CONFIG["model_tag"], RUNTIME)

        def _answer_bytes(self, endpoint: str, records: list, model: type[BaseModel]) -> bytes:
            """The JSON body of the API's answer to validated records (what it would return), scored and logged."""
            outputs = self._answer(endpoint, records)
            body = answer_bytes(outputs, model)
            if body is None:  # a value orjson does not write plainly: through the pydantic model
                body = b"[" + b",".join(model(**{k: v for k, v in o.items() if k in model.model_fields})
                                        .model_dump_json().encode() for o in outputs) + b"]"
            return body

        @bentoml.on_shutdown
        def flush_log(self) -> None:
            """Write every queued prediction before the worker exits."""
            if self.plog is not None:
                self.plog.close()
            if self.feedback_db is not None:
                self.feedback_db.close()
                self.feedback_db = None

        def _answer(self, endpoint: str, records: list) -> list[dict]:
            """Score validated records, give each answer an id, and log them (each record dumped once)."""
            if not records:
                return []
            rows = [r.model_dump(mode="json", by_alias=True) for r in records]
            outputs = self._score_onnx(rows, endpoint) if self.onnx is not None else None
            if outputs is None:
                outputs = self._score_rows(rows, endpoint)
            for r, row, o, pid in zip(records, rows, outputs, prediction_ids(len(outputs))):
                pid = o["prediction_id"] = _private(r, "_given_id") or pid  # a shadow keeps the champion's id
                warned = record_warnings(row, SCHEMA)
                if warned:
                    o["warnings"] = warned
                    log.warning("prediction %s answered with warnings: %s", pid, "; ".join(warned))
            self._log(endpoint, records, rows, outputs)
            return outputs

        def _score_onnx(self, rows: list[dict], method: str) -> Optional[list[dict]]:
            """The graph's answers as the native path formats them; None (score natively) when it fails."""
            try:
                if method == "predict":
                    return [{"prediction": v, "model_version": VERSION, "fallback": False}
                            for v in self.onnx.predict(rows)]
                out = []
                for probs in self.onnx.predict_proba(rows):
                    best = max(probs, key=probs.get)  # the first of tied classes, as the native path
                    out.append({"probabilities": {str(k): p for k, p in probs.items()}, "prediction": best,
                                "model_version": VERSION, "fallback": False})
                return out
            except Exception as exc:
                log.warning("v%s ONNX runtime failed on %d records (%s: %s); scoring natively",
                            VERSION, len(rows), type(exc).__name__, exc)
                return None

        def _score_rows(self, records: list, method: str) -> list[dict]:
            frame = records_frame(records, SCHEMA)
            try:
                return self._format(self.model, getattr(self.model, method)(frame), method, VERSION, False)
            except Exception as exc:
                log.warning("v%s failed on %d records (%s: %s); scoring row by row",
                            VERSION, len(records), type(exc).__name__, exc)
            out: list[dict] = []
            for i in range(len(frame)):
                row = frame.iloc[[i]]
                try:
                    out += self._format(self.model, getattr(self.model, method)(row), method, VERSION, False)
                except Exception as exc:
                    out.append(self._fallback(row, method, f"{type(exc).__name__}: {exc}"))
            return out

        def _fallback(self, row: Any, method: str, error: str) -> dict:
            if PACK["fallback"] == "previous" and self.previous is not None:
                try:
                    out = self._format(self.previous, getattr(self.previous, method)(row), method,
                                       str(self.previous_version), True)[0]
                    self.metrics["fallback"].labels(kind="previous").inc()
                    log.warning("fallback: v%s could not score a record (%s); previous v%s answered",
                                VERSION, error[:200], self.previous_version)
                    return out
                except Exception as exc:
                    error += f"; previous v{self.previous_version} failed too: {type(exc).__name__}: {exc}"
            if PACK["fallback"] == "constant" and method == "predict":
                self.metrics["fallback"].labels(kind="constant").inc()
                log.warning("fallback: v%s could not score a record (%s); answered the constant %r",
                            VERSION, error[:200], PACK["fallback_value"])
                return {"prediction": PACK["fallback_value"], "model_version": "constant", "fallback": True}
            key = "prediction" if method == "predict" else "probabilities"
            return {key: None, "model_version": VERSION, "fallback": False,
                    "error": f"model v{VERSION} could not score this record: {error}"[:500]}

        def _format(self, model: Any, values: Any, method: str, version: str, fallback: bool) -> list[dict]:
            if method == "predict":
                return [{"prediction": _plain(v), "model_version": version, "fallback": fallback} for v in values]
            classes = [_plain(c) for c in model.classes_]
            labels = [str(c) for c in classes]
            # "prediction" (the most probable class) is kept for the log, not sent: the response keeps its shape
            return [{"probabilities": {lab: float(p) for lab, p in zip(labels, row)},
                     "prediction": classes[max(range(len(row)), key=lambda i: row[i])],
                     "model_version": version, "fallback": fallback} for row in values]

        def _log(self, endpoint: str, records: list, rows: list[dict], outputs: list[dict]) -> None:
            if self.plog is None:
                return
            now = time.time()
            events = []
            for r, inputs, o in zip(records, rows, outputs):
                events.append(PredictionEvent(
                    now, CONFIG["project"], o.get("model_version", VERSION), endpoint,
                    "error" if o.get("error") else ("fallback" if o.get("fallback") else "model"),
                    inputs, o.get("prediction"), o.get("probabilities"), o["prediction_id"],
                    _private(r, "_traffic") or "live", id_text(inputs.get(ID_COLUMN)) if ID_COLUMN else None))
            self.plog.record(events)

        if RUNTIME == "onnx":

            @bentoml.api
            async def predict(self, records: list[Record], /) -> list[Prediction]:  # type: ignore[valid-type]
                """Predict one value per record. Body: a JSON list of records."""
                outputs = self._answer("predict", records)
                return answer_json(outputs, Prediction) or [Prediction(**o) for o in outputs]

        else:

            @bentoml.api(**BATCHING)
            def predict(self, records: list[Record], /) -> list[Prediction]:  # type: ignore[valid-type]
                """Predict one value per record. Body: a JSON list of records."""
                return [Prediction(**o) for o in self._answer("predict", records)]

        if IS_CLASSIFIER and RUNTIME == "onnx":

            @bentoml.api
            async def predict_proba(self, records: list[Record], /) -> list[Probabilities]:  # type: ignore[valid-type]
                """Class probabilities per record. Body: a JSON list of records."""
                outputs = self._answer("predict_proba", records)
                return answer_json(outputs, Probabilities) or \
                    [Probabilities(**{k: v for k, v in o.items() if k != "prediction"}) for o in outputs]

        elif IS_CLASSIFIER:

            @bentoml.api(**BATCHING)
            def predict_proba(self, records: list[Record], /) -> list[Probabilities]:  # type: ignore[valid-type]
                """Class probabilities per record. Body: a JSON list of records."""
                return [Probabilities(**{k: v for k, v in o.items() if k != "prediction"})
                        for o in self._answer("predict_proba", records)]

        @bentoml.api(route="/feedback")
        def feedback(self, items: Any, /) -> dict:
            """Send true labels for earlier predictions. Body: a JSON list of
            `{"prediction_id": "<from the prediction response>", "label": <true label>}` (or the project's
            id column instead of `prediction_id`). Answers each item with a status (accepted, late,
            duplicate, unknown_id, wrong_class, invalid_label) and a count per status; the first label
            for a prediction is kept."""
            from starlette.responses import JSONResponse

            if self.feedback_db is None:
                return JSONResponse({"error": "feedback needs the prediction log",
                                     "detail": "this service does not log predictions (packaging.log_predictions: false)"},
                                    status_code=409)
            try:
                parsed = parse_feedback(items, ID_COLUMN)
            except FeedbackError as exc:
                return JSONResponse({"error": "invalid feedback", "detail": exc.problems}, status_code=400)
            self.plog.flush(5.0)  # labels for predictions answered a moment ago must find them
            try:
                await_logged(self.feedback_db, parsed)  # ...also those another process answered (a canary)
                with self.feedback_lock:
                    result = record_feedback(self.feedback_db, parsed, current=LABEL_SCHEMA, source="api",
                                             late_after_days=self.late_after_days)
            except (sqlite3.OperationalError, ServiceUnreachableError) as exc:  # locked, full or down: the caller may retry
                log.warning("feedback not stored: %s", exc)
                return JSONResponse({"error": "feedback store busy", "detail": f"nothing was stored ({exc}); retry"},
                                    status_code=503)
            log.info("feedback: %s", result.summary())
            return result.to_dict()

        @bentoml.api(route="/metadata")
        def metadata(self) -> dict:
            """Project, model version, data fingerprint, git SHA, training time and the input schema."""
            return CONFIG["metadata"]

    cache_io_schemas(SluiceService)
    SluiceService.add_asgi_middleware(
        GuardMiddleware, max_bytes=int(PACK["request_max_bytes"]), token_env=PACK.get("auth_token_env"),
        metadata=CONFIG["metadata"], metrics_public=bool(PACK.get("metrics_public", False)),
        record_specs=use_validated_input(SluiceService),
    )


def service_metrics() -> dict[str, Any]:
    """Sluicegate's counters on /metrics beside BentoML's own: a full disk must show as a number.

    Made on first use in the serving worker, once per process: `bentoml build` imports this
    module too, sometimes several times in one process, and Prometheus refuses a second
    registration of the same name.
    """
    import sluicegate.serving as home

    made = home.__dict__.setdefault("_service_metrics", {})
    if not made:
        made["written"] = bentoml.metrics.Counter(name="sluice_prediction_log_written",
                                                  documentation="Predictions written to the prediction log")
        made["dropped"] = bentoml.metrics.Counter(
            name="sluice_prediction_log_dropped",
            documentation="Answered predictions the prediction log could not store (disk full or unwritable)")
        made["fallback"] = bentoml.metrics.Counter(
            name="sluice_fallback_answers", documentation="Records answered by the fallback because the model failed",
            labelnames=["kind"])
    return made


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
