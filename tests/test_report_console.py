"""What a run prints: job lines held back to the log file during pipeline/demo steps, --verbose, the Spark
driver's log4j2 configuration (warnings on the console, everything in <warehouse>/_logs/spark-driver.log)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from lakeloop import session
from lakeloop.cli import build_parser
from lakeloop.conf import load_conf
from lakeloop.session import LOG4J2_CONF, RunContext, configure_logging, log_to_file, quiet_console
from lakeloop.submit import build_command

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def console(capsys):
    """lakeloop's console handler writing into capsys; the settings restored afterwards."""
    configure_logging("WARN", verbose=False)
    yield capsys
    configure_logging("WARN", verbose=False)


def test_steps_log_to_the_file_and_the_console_keeps_warnings(console, tmp_path):
    ctx = RunContext("curate", load_conf("local", [f"warehouse={tmp_path}"]), session.parse_run_date("2026-11-01"))
    with log_to_file(tmp_path / "run.log") as path, quiet_console():
        ctx.log.info("curate report details")
        ctx.log.warning("a real warning")
        ctx.announce("spark session: UI http://host:4040")
        logging.getLogger("mlflow").info("Created version '3' of model")
    ctx.log.info("after the steps")
    err = console.readouterr().err
    assert "curate report details" not in err and "Created version" not in err
    assert "a real warning" in err and "UI http://host:4040" in err and "after the steps" in err
    logged = path.read_text()
    for line in ("curate report details", "a real warning", "UI http://host:4040", "Created version '3'"):
        assert line in logged, line
    assert "after the steps" not in logged  # the file handler is gone with the run


def test_verbose_shows_the_libraries_logs(console, tmp_path):
    configure_logging("WARN", verbose=True)
    assert session.is_verbose() and build_parser("ingest").parse_args(["--verbose"]).verbose
    with quiet_console():
        logging.getLogger("lakeloop.curate").info("job detail")
        logging.getLogger("mlflow").info("Created version '4' of model")
    err = console.readouterr().err
    assert "job detail" in err and "Created version '4'" in err


def test_submit_applies_the_log4j2_configuration(tmp_path):
    overrides = [f"warehouse={tmp_path}/wh"]
    java = build_command("ingest", "local", overrides, ["--date", "2026-11-01"], check_files=False).argv
    props = dict(a.split("=", 1) for a in java if a.startswith("spark."))
    options = props["spark.driver.extraJavaOptions"]
    assert options.startswith(f"-Dlog4j2.configurationFile={LOG4J2_CONF} -Dlakeloop.log.dir={tmp_path}/wh/_logs")
    assert "-XX:+UseSerialGC" in options  # the env's own options kept
    assert "lakeloop.console.level" not in options
    verbose = build_command("ingest", "local", overrides, ["--verbose"], check_files=False).argv
    assert "-Dlakeloop.console.level=INFO" in next(a for a in verbose if a.startswith("spark.driver.extraJava"))
    remote = build_command("ingest", "yarn", [], [], check_files=False).argv  # cluster deploy mode
    assert str(LOG4J2_CONF) in remote[remote.index("--files") + 1].split(",")
    assert "spark.driver.extraJavaOptions=-Dlog4j2.configurationFile=log4j2.properties" in remote


def test_spark_driver_logs_warnings_to_the_console_and_everything_to_the_file(tmp_path):
    """A real driver JVM started with the options: INFO lines only in spark-driver.log, the UI URL logged."""
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(ROOT / "lib")!r}]
        from lakeloop.conf import load_conf
        from lakeloop.session import RunContext, build_session, configure_logging, parse_run_date
        conf = load_conf("local", ["warehouse={tmp_path}/wh", "spark.master=local[1]"])
        configure_logging("WARN")
        ctx = RunContext("ingest", conf, parse_run_date("2026-11-01"))
        spark = build_session(ctx)
        assert spark.sparkContext.getConf().get("spark.ui.showConsoleProgress") == "false"  # not a terminal
        spark.range(10).count()
        spark.stop()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (tmp_path / "wh" / "_logs" / "spark-driver.log").read_text()
    assert " INFO " in log and "SparkContext" in log
    assert " INFO " not in done.stderr.replace("INFO [ingest", "")  # only lakeloop's own INFO line
    assert "spark session lakeloop-ingest-2026-11-01: UI http://" in done.stderr


def test_the_demo_ends_with_where_to_look(tmp_path):
    from lakeloop.demo import where_to_look
    from lakeloop.train.registry import tracking_uri

    conf = load_conf("local", [f"warehouse={tmp_path}/wh"])
    args = build_parser("demo").parse_args(["--set", f"warehouse={tmp_path}/wh", "--verbose"])
    lines = where_to_look(conf, args, tmp_path / "wh/_reports/demo/r1.html", tmp_path / "wh/_logs/r1.log", 42)
    text = "\n".join(lines)
    assert lines[0] == "demo: where to look" and all(line.startswith("demo:   ") for line in lines[1:])
    assert f"run report  {tmp_path}/wh/_reports/demo/r1.html" in text
    assert f"mlflow ui --backend-store-uri {tracking_uri(conf)}" in text
    assert tracking_uri(conf) == f"sqlite:///{tmp_path}/wh/_mlflow/mlflow.db"
    assert f"./spark-submit.sh serve --port 8080 --env local --set warehouse={tmp_path}/wh\n" in text
    assert "curl http://127.0.0.1:8080/v1/recommendations/42" in text
    assert "lab notebooks/analysis.ipynb" in text and f"full log    {tmp_path}/wh/_logs/r1.log" in text
