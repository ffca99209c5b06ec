"""Data that grows: partition folders and globs, SQL windows, labelled production rows in the snapshot,
and the split that holds out the newest production rows the champion never trained on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from sluicegate.config import CsvSource, GatesConfig, ParquetSource, ProductionConfig, SplitConfig, SqlSource
from sluicegate.data import (
    LABELLED_AT,
    MARKER_COLUMNS,
    ORIGIN,
    PREDICTED_AT,
    PREDICTION_ID,
    UNLOGGED,
    combine_rows,
    dataset_tags,
    ingest_data,
    load_snapshot,
    read_production_rows,
    read_source,
    source_key,
)
from sluicegate.errors import DataSourceError
from sluicegate.evaluation import EvaluationReport
from sluicegate.gates import decide_promotion
from sluicegate.split import split_data, split_frame
from tests.helpers import churn_frame, log_labelled_predictions

NOW = 2_000_000_000.0
DAY = 86400.0
ON = ProductionConfig(enabled=True)


# ---------------------------------------------------------------- folders and globs
def _parts(root: Path, names: list[str], n: int = 20) -> None:
    (root / "data" / "parts").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        churn_frame(n, seed=i).assign(customer_id=lambda f, i=i: f.customer_id + 1000 * i).to_csv(
            root / "data" / "parts" / name, index=False)


def test_glob_reads_partitions_in_sorted_order_and_a_new_file_changes_the_key(tmp_path):
    _parts(tmp_path, ["2026-11-02.csv", "2026-11-01.csv"])  # written out of order
    src = CsvSource(kind="csv", path="data/parts/*.csv")
    frame = read_source(src, tmp_path)
    assert len(frame) == 40
    assert list(frame.customer_id[:2]) == [1000, 1001]  # 2026-11-01.csv (seed 1) first: sorted, not written order
    key = source_key(src, tmp_path)
    assert key == source_key(src, tmp_path)
    _parts(tmp_path, ["2026-11-03.csv"])
    assert source_key(src, tmp_path) != key  # a new partition file is new content
    assert len(read_source(src, tmp_path)) == 60
    # the folder itself reads the same files in the same order
    folder = read_source(CsvSource(kind="csv", path="data/parts"), tmp_path)
    pd.testing.assert_frame_equal(folder, read_source(src, tmp_path))
    # an edited partition changes the key too
    key = source_key(src, tmp_path)
    churn_frame(20, seed=9).to_csv(tmp_path / "data" / "parts" / "2026-11-01.csv", index=False)
    assert source_key(src, tmp_path) != key


def test_parquet_folder_skips_markers_and_reads_hive_partitions(tmp_path):
    base = tmp_path / "data" / "events"
    for day, seed in (("2026-11-02", 2), ("2026-11-01", 1)):
        (base / f"day={day}").mkdir(parents=True)
        churn_frame(10, seed=seed).to_parquet(base / f"day={day}" / "part-0.parquet", index=False)
    (base / "_SUCCESS").write_text("")
    (base / "day=2026-11-01" / ".part-0.parquet.crc").write_text("x")
    frame = read_source(ParquetSource(kind="parquet", path="data/events"), tmp_path)
    pd.testing.assert_frame_equal(frame.head(10), churn_frame(10, seed=1))
    glob = read_source(ParquetSource(kind="parquet", path="data/events/day=*/*.parquet"), tmp_path)
    pd.testing.assert_frame_equal(frame, glob)


def test_partition_problems_name_the_key(tmp_path):
    _parts(tmp_path, ["a.csv"])
    churn_frame(5).drop(columns="region").to_csv(tmp_path / "data" / "parts" / "b.csv", index=False)
    with pytest.raises(DataSourceError, match=r"data.source.path: data/parts/b.csv has other columns than "
                                              r"data/parts/a.csv \(differing: region\)"):
        read_source(CsvSource(kind="csv", path="data/parts/*.csv"), tmp_path)
    with pytest.raises(DataSourceError, match="data.source.path: no files match 'data/none/\\*.csv'"):
        read_source(CsvSource(kind="csv", path="data/none/*.csv"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="data.source.path: the folder empty holds no .parquet"):
        read_source(ParquetSource(kind="parquet", path="empty"), tmp_path)
    assert source_key(CsvSource(kind="csv", path="data/none/*.csv"), tmp_path) is None


# ---------------------------------------------------------------- SQL with a window
def _db(tmp_path: Path) -> str:
    stamps = [NOW - d * DAY for d in (40, 10, 6, 1)]
    frame = pd.DataFrame({
        "customer_id": [1, 2, 3, 4], "name": ["a", "b", "c", "x' OR '1'='1"],
        "updated_at": pd.to_datetime(stamps, unit="s").strftime("%Y-%m-%d %H:%M:%S"), "updated_epoch": stamps,
    })
    with sqlite3.connect(tmp_path / "w.db") as conn:
        frame.to_sql("customers", conn, index=False)
    return f"sqlite:///{tmp_path / 'w.db'}"


def test_sql_window_parameter_is_bound_from_the_configured_window(tmp_path):
    url = _db(tmp_path)
    src = SqlSource(kind="sql", url=url, query="SELECT customer_id FROM customers WHERE updated_at >= :since",
                    params={"since": "{window_start}"}, window_days=7)
    assert read_source(src, tmp_path, now=NOW).customer_id.tolist() == [3, 4]
    assert read_source(src, tmp_path, now=NOW + 5 * DAY).customer_id.tolist() == [4]  # the window moves
    wide = src.model_copy(update={"window_days": 30.0})
    assert read_source(wide, tmp_path, now=NOW).customer_id.tolist() == [2, 3, 4]
    epoch = SqlSource(kind="sql", url=url, query="SELECT customer_id FROM customers "
                                                 "WHERE updated_epoch >= :a AND updated_epoch < :b",
                      params={"a": "{window_start_epoch}", "b": "{window_end_epoch}"}, window_days=7)
    assert read_source(epoch, tmp_path, now=NOW - 2 * DAY).customer_id.tolist() == [3]


def test_sql_parameters_are_never_formatted_into_the_query(tmp_path):
    url = _db(tmp_path)
    src = SqlSource(kind="sql", url=url, query="SELECT customer_id FROM customers WHERE name = :name",
                    params={"name": "x' OR '1'='1"})
    assert read_source(src, tmp_path).customer_id.tolist() == [4]  # the literal name, not an injected OR


# ---------------------------------------------------------------- production rows
def _source(tmp_path: Path, n: int = 200) -> CsvSource:
    churn_frame(n).to_csv(tmp_path / "c.csv", index=False)
    return CsvSource(kind="csv", path="c.csv")


def _log(home: Path, n: int, start: float, labels=True, seed: int = 3, prefix: str = "p", labelled_at=None):
    rows = churn_frame(n, seed=seed).assign(customer_id=lambda f: f.customer_id + 10_000 * seed)
    return rows, log_labelled_predictions(home, "churn", rows, "churned", start=start, step_s=3600, labels=labels,
                                          prefix=prefix, labelled_at=labelled_at)


def test_production_rows_are_joined_with_their_labels_and_shaped_like_the_source(tmp_path):
    home = tmp_path / "home"
    logged, ids = _log(home, 30, NOW - 2 * DAY, labels=20)  # ten predictions never got a label
    columns = list(churn_frame(5).columns)
    rows = read_production_rows("churn", ON, columns, "churned", home, now=NOW)
    assert list(rows.columns) == [*columns, *MARKER_COLUMNS]
    assert len(rows) == 20 and set(rows[ORIGIN]) == {"production"}
    assert rows[PREDICTION_ID].tolist() == ids[:20]
    pd.testing.assert_frame_equal(rows[columns], logged.head(20)[columns], check_dtype=False)
    assert rows[LABELLED_AT].notna().all() and str(rows[PREDICTED_AT].dtype) == "datetime64[ns, UTC]"
    assert read_production_rows("nothing", ON, columns, "churned", home, now=NOW).empty


def test_a_source_column_the_log_lacks_is_validated_on_the_rows_that_carry_it(tmp_path):
    """A source with a column the model does not use (so the log never has it): production rows
    leave it empty, and validation judges it on the source rows instead of failing the retrain."""
    from sluicegate.config import ValidationConfig
    from sluicegate.validation import validate_data

    home = tmp_path / "home"
    _log(home, 40, NOW - 2 * DAY)
    source = churn_frame(60).assign(note=lambda f: [f"row {i}" for i in range(len(f))])
    rows = read_production_rows("churn", ON, list(source.columns), "churned", home, now=NOW)
    assert rows["note"].isna().all() and set(rows[UNLOGGED]) == {"note"}
    frame = combine_rows(source, rows, ON)
    assert frame["note"].isna().mean() == pytest.approx(40 / 100)  # over max_nan_share, counted naively
    spec = ValidationConfig(max_nan_share=0.2, columns={"note": {"max_null_share": 0.0}})
    report = validate_data(frame, spec, "churned", "classification", tmp_path / "v")
    assert report.passed, report.failure_summary()
    assert report.rows == 100
    # a logged input left empty in production is still missing data
    broken = frame.copy()
    broken.loc[broken[ORIGIN] == "production", "tenure"] = float("nan")
    failed = validate_data(broken, spec, "churned", "classification", tmp_path / "v2")
    assert not failed.passed and "tenure" in failed.failure_summary()
    assert "note" not in failed.failure_summary()


def test_production_window_and_row_limit(tmp_path):
    home = tmp_path / "home"
    _log(home, 10, NOW - 40 * DAY, prefix="old")  # predicted 40 days ago
    _log(home, 10, NOW - 1 * DAY, seed=4, prefix="new")
    columns = list(churn_frame(5).columns)
    recent = read_production_rows("churn", ON, columns, "churned", home, now=NOW)
    assert len(recent) == 10 and recent[PREDICTION_ID].str.startswith("new").all()
    everything = read_production_rows("churn", ON.model_copy(update={"window_days": None}), columns, "churned", home,
                                      now=NOW)
    assert len(everything) == 20
    newest = read_production_rows("churn", ON.model_copy(update={"window_days": None, "max_rows": 4}), columns,
                                  "churned", home, now=NOW)
    assert newest[PREDICTION_ID].tolist() == ["new6", "new7", "new8", "new9"]


def test_production_share_is_capped_keeping_the_newest(tmp_path):
    home = tmp_path / "home"
    _log(home, 60, NOW - 2 * DAY)
    source = churn_frame(100)
    rows = read_production_rows("churn", ON, list(source.columns), "churned", home, now=NOW)
    capped = combine_rows(source, rows, ON.model_copy(update={"max_share": 0.2}))
    prod = capped[capped[ORIGIN] == "production"]
    assert len(capped) == 125 and len(prod) == 25  # 25 / 125 = 20%
    assert prod[PREDICTION_ID].tolist() == [f"p{i}" for i in range(35, 60)]
    pd.testing.assert_frame_equal(capped.head(100)[list(source.columns)], source)  # source rows first, unchanged
    assert capped.dtypes[list(source.columns)].equals(source.dtypes)  # logged values keep the source's types
    assert len(combine_rows(source, rows, ON.model_copy(update={"max_share": 1.0}))) == 160


def test_a_new_label_changes_the_fingerprint(tmp_path):
    home, store = tmp_path / "home", tmp_path / "store"
    src = _source(tmp_path)
    plain = ingest_data(src, tmp_path, "churned", store, "churn")
    # enabled but nothing labelled yet: the very same snapshot, no marker columns
    _, ids = _log(home, 10, NOW - DAY, labels=False)
    before = ingest_data(src, tmp_path, "churned", store, "churn", production=ON, log_home=home, now=NOW)
    assert before.fingerprint == plain.fingerprint and before.production_rows == 0 and dataset_tags(before) == {}
    _label(home, ids[:1], when=NOW - 100)
    one = ingest_data(src, tmp_path, "churned", store, "churn", production=ON, log_home=home, now=NOW)
    assert one.fingerprint != plain.fingerprint and one.production_rows == 1 and one.rows == 201
    again = ingest_data(src, tmp_path, "churned", store, "churn", production=ON, log_home=home, now=NOW)
    assert again.fingerprint == one.fingerprint  # same labels, same content
    _label(home, ids[1:2], when=NOW - 50)
    two = ingest_data(src, tmp_path, "churned", store, "churn", production=ON, log_home=home, now=NOW)
    assert two.fingerprint != one.fingerprint and two.production_rows == 2
    assert pd.Timestamp(two.labelled_until) == pd.Timestamp(NOW - 50, unit="s", tz="UTC")
    assert dataset_tags(two) == {"sluice.production_rows": "2", "sluice.labelled_until": two.labelled_until}
    # validation and drift read the snapshot without the markers; the split reads them
    assert not [c for c in load_snapshot(two).columns if c.startswith("_sluice_")]
    assert ORIGIN in load_snapshot(two, markers=True).columns


def _label(home: Path, ids: list[str], when: float) -> None:
    from sluicegate.serving.feedback import parse_feedback, record_feedback
    from sluicegate.serving.predlog import connect_log, log_path

    conn = connect_log(log_path(home, "churn"))
    try:
        assert record_feedback(conn, parse_feedback([{"prediction_id": i, "label": 1} for i in ids]), now=when).stored
    finally:
        conn.close()


# ---------------------------------------------------------------- the split and the holdout rule
def _combined(tmp_path: Path) -> pd.DataFrame:
    """400 source rows, then 50 production rows labelled at NOW-10d and 50 labelled at NOW-1h."""
    home = tmp_path / "home"
    _log(home, 50, NOW - 20 * DAY, labelled_at=NOW - 10 * DAY, prefix="a")
    _log(home, 50, NOW - 5 * DAY, seed=4, labelled_at=NOW - 3600, prefix="b")
    source = churn_frame(400)
    rows = read_production_rows("churn", ON.model_copy(update={"window_days": None}), list(source.columns), "churned",
                                home, now=NOW)
    return combine_rows(source, rows, ON)


@pytest.mark.parametrize("method", ["random", "stratified", "time"])
def test_holdout_is_the_newest_production_rows_labelled_after_the_champion(tmp_path, method):
    frame = _combined(tmp_path)
    spec = SplitConfig(method=method, time_column="signup_date" if method == "time" else None)
    cutoff = pd.Timestamp(NOW - 5 * DAY, unit="s", tz="UTC").isoformat()  # the champion trained on the "a" rows
    train, valid, test = split_frame(frame, spec, method, "churned", 3, "signup_date", holdout_after=cutoff)
    prod_test = test[test[ORIGIN] == "production"]
    assert len(prod_test) == 15  # 30% of the 50 eligible
    assert prod_test[PREDICTION_ID].tolist() == [f"b{i}" for i in range(35, 50)]  # the newest predictions
    assert not (set(prod_test[PREDICTION_ID]) & set(train[PREDICTION_ID].dropna()))
    # every other production row trains or validates; none is lost or duplicated
    assert len(train) + len(valid) + len(test) == len(frame)
    assert (train[ORIGIN] == "production").sum() + (valid[ORIGIN] == "production").sum() == 85
    # the source rows are split exactly as without production rows, so a source row keeps its part
    alone = split_frame(churn_frame(400), spec, method, "churned", 3, "signup_date")
    for part, ref in zip((train, valid, test), alone):
        assert sorted(part.loc[part[ORIGIN] == "source", "customer_id"]) == sorted(ref.customer_id)


def test_without_a_champion_cutoff_every_production_row_is_eligible(tmp_path):
    frame = _combined(tmp_path)
    _, _, test = split_frame(frame, SplitConfig(), "stratified", "churned", 3)
    assert (test[ORIGIN] == "production").sum() == 30  # 30% of 100, all from the newest ("b")
    assert test.loc[test[ORIGIN] == "production", PREDICTION_ID].str.startswith("b").all()


def test_split_parts_carry_no_markers_and_the_holdout_is_described(tmp_path):
    frame = _combined(tmp_path)
    snap = tmp_path / "snap.parquet"
    frame.to_parquet(snap, index=False)
    cutoff = pd.Timestamp(NOW - 5 * DAY, unit="s", tz="UTC").isoformat()
    res = split_data(str(snap), SplitConfig(), "stratified", "churned", 3, tmp_path / "s", holdout_after=cutoff)
    for path in (res.train_path, res.valid_path, res.test_path):
        assert not [c for c in pd.read_parquet(path).columns if c.startswith("_sluice_")]
    assert res.production_rows[2] == 15 and sum(res.production_rows) == 100
    assert res.holdout.startswith(f"holdout: {res.rows[2]} rows (80 source + 15 production predicted ")
    assert "the newest 30% of 50 production rows labelled after" in res.holdout
    assert "the champion's newest training label" in res.holdout
    # nothing eligible: the holdout says so
    late = pd.Timestamp(NOW, unit="s", tz="UTC").isoformat()
    res = split_data(str(snap), SplitConfig(), "stratified", "churned", 3, tmp_path / "s2", holdout_after=late)
    assert res.holdout.startswith("holdout: 80 source rows (none of the 100 production rows was labelled after")
    # no production rows at all
    churn_frame(400).to_parquet(snap, index=False)
    res = split_data(str(snap), SplitConfig(), "stratified", "churned", 3, tmp_path / "s3")
    assert res.holdout == "holdout: 80 source rows" and res.production_rows == (0, 0, 0)


def test_the_verdict_names_the_holdout():
    report = EvaluationReport({"accuracy": 0.9}, {"accuracy": 0.9}, {"accuracy": 0.9},
                              holdout="holdout: 95 rows (80 source + 15 production predicted 2033-05-13 to 2033-05-13)")
    decision = decide_promotion(report, {"accuracy": 0.8}, "1", GatesConfig(primary_metric="accuracy"))
    assert decision.promote and decision.summary.endswith(
        "Holdout: 95 rows (80 source + 15 production predicted 2033-05-13 to 2033-05-13).")
    assert decision.to_dict()["holdout"] == report.holdout and "80 source + 15 production" in decision.to_markdown()


def test_config_check_reads_the_header_of_the_first_partition(tmp_path):
    import yaml

    from sluicegate.config import check_sources, load_config
    from tests.helpers import churn_config

    _parts(tmp_path, ["2026-11-01.csv", "2026-11-02.csv"])
    (tmp_path / "configs").mkdir()
    cfg = churn_config(tmp_path, data_file="data/parts/*.csv")
    path = tmp_path / "configs" / "churn.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert check_sources(load_config(path)) == []
    cfg["data"]["target"] = "churn"
    path.write_text(yaml.safe_dump(cfg))
    assert check_sources(load_config(path)) == [
        "data.target: column 'churn' not in data/parts/*.csv; did you mean 'churned'?"]
    cfg["data"]["source"]["path"] = "data/other/*.csv"
    path.write_text(yaml.safe_dump(cfg))
    assert check_sources(load_config(path))[0].startswith("data.source.path: no files match 'data/other/*.csv'")
