"""Run context, session builder and the job runner's exit codes."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from lakeloop import cli
from lakeloop.errors import DataQualityError, GateRefused
from lakeloop.session import RunContext, build_session, configure_logging, parse_run_date

from tests.conftest import ROOT


def test_parse_run_date():
    assert parse_run_date("2026-11-01") == dt.date(2026, 11, 1)
    assert parse_run_date(None) == dt.datetime.now(dt.UTC).date()
    with pytest.raises(ValueError, match="expected YYYY-MM-DD"):
        parse_run_date("01/11/2026")


def test_run_context_names_and_log_records(conf, capsys):
    ctx = RunContext(job="ingest", conf=conf, run_date=dt.date(2026, 11, 1))
    assert ctx.app_name == "lakeloop-ingest-2026-11-01"
    assert ctx.as_dict()["env"] == "local" and len(ctx.run_id) == 12
    configure_logging("INFO")
    ctx.log.info("hello %s", "world")
    err = capsys.readouterr().err
    assert f"[ingest {ctx.run_id}] lakeloop.ingest: hello world" in err
    logging.getLogger("lakeloop").setLevel(logging.INFO)


def test_build_session_applies_conf(spark, conf):
    ctx = RunContext(job="t", conf=conf.with_overrides({"log_level": "ERROR"}), run_date=dt.date(2026, 11, 1))
    session = build_session(ctx)
    assert session.conf.get("spark.sql.session.timeZone") == "UTC"
    assert session.sparkContext.getLocalProperty("spark.job.description") == f"t 2026-11-01 run {ctx.run_id}"


def _run(body, argv=None):
    parser = cli.job_parser("t", "test job")
    return cli.run_job("t", argv or ["--date", "2026-11-01"], parser, body, needs_spark=False)


def test_run_job_exit_codes(tmp_path):
    def ok(ctx, spark, args):
        assert ctx.date == "2026-11-01" and ctx.env == "local"

    def dq(ctx, spark, args):
        raise DataQualityError("quarantine rate 9% > 5%")

    def gate(ctx, spark, args):
        raise GateRefused("challenger auc 0.61 < champion 0.70 + 0.01")

    def boom(ctx, spark, args):
        raise RuntimeError("unexpected")

    assert _run(ok) == 0
    assert _run(dq) == 3
    assert _run(gate) == 4
    assert _run(boom) == 1
    assert _run(ok, ["--set", "spark.executor.cores=x"]) == 2
    assert _run(ok, ["--date", "yesterday"]) == 2
    assert _run(ok, ["--env", "nope"]) == 2


def test_pools_file_is_a_file_uri(conf, tmp_path, monkeypatch):
    """Spark opens the FAIR pools file with Hadoop's FileSystem: a bare path would be on HDFS on YARN."""
    from lakeloop.session import _resolve_pools_file

    assert _resolve_pools_file(conf, "fairscheduler.xml") == (ROOT / "conf" / "fairscheduler.xml").as_uri()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pools.xml").write_text("<allocations/>")  # shipped into a driver's working directory
    assert _resolve_pools_file(conf, "pools.xml") == (tmp_path / "pools.xml").as_uri()
    assert _resolve_pools_file(conf, "hdfs:///conf/pools.xml") == "hdfs:///conf/pools.xml"
