"""The daily pipeline: DAG order, completion markers, resume, the run lock, exit codes, run reports."""

from __future__ import annotations

import ast
import datetime as dt
import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from lakeloop import pipeline
from lakeloop.errors import DataQualityError
from lakeloop.pipeline import DAILY_STEPS, PipelineLocked, RunLock, Step, run_pipeline

ROOT = Path(__file__).resolve().parents[1]
DAY = dt.date(2026, 11, 3)


class Recorder:
    """Step mains that record their calls; ``codes[name]`` lists the exit codes to return in turn."""

    def __init__(self, codes: dict[str, list[int]] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.codes = codes or {}

    def step(self, name: str) -> Step:
        def main(argv):
            self.calls.append((name, argv[argv.index("--date") + 1]))
            pending = self.codes.get(name)
            return pending.pop(0) if pending else 0
        return Step(name, main=main)

    def steps(self, *names: str) -> list[Step]:
        return [self.step(n) for n in names]


def statuses(result, date: str = DAY.isoformat()) -> dict[str, str]:
    return {r.step: r.status for r in result.steps if r.date == date}


def test_daily_dag_order_and_backfill_in_date_order(conf, tmp_path):
    assert [s.name for s in DAILY_STEPS] == ["ingest", "curate", "validate", "features", "train", "infer"]
    rec = Recorder()
    dates = pipeline.date_range(DAY, DAY + dt.timedelta(days=1))
    result = run_pipeline(conf, dates, ["--env", "local"], "r1", steps=rec.steps("a", "b", "c"))
    d1, d2 = (d.isoformat() for d in dates)
    assert rec.calls == [("a", d1), ("b", d1), ("c", d1), ("a", d2), ("b", d2), ("c", d2)]
    assert result.exit_code == 0
    with pytest.raises(ValueError, match="before"):
        pipeline.date_range(DAY, DAY - dt.timedelta(days=1))


def test_completed_steps_are_skipped_and_force_reruns_them(conf):
    rec = Recorder()
    run_pipeline(conf, [DAY], [], "first", steps=rec.steps("a", "b"))
    marker = pipeline.state_dir(conf) / f"dt={DAY}" / "a.json"
    assert json.loads(marker.read_text())["run_id"] == "first"
    rec.calls.clear()
    again = run_pipeline(conf, [DAY], [], "second", steps=rec.steps("a", "b"))
    assert rec.calls == [] and statuses(again) == {"a": "skipped", "b": "skipped"}
    assert again.steps[0].summary["completed_by"] == "first"
    forced = run_pipeline(conf, [DAY], [], "third", steps=rec.steps("a", "b"), force=True)
    assert [c[0] for c in rec.calls] == ["a", "b"] and statuses(forced) == {"a": "ok", "b": "ok"}
    assert json.loads(marker.read_text())["run_id"] == "third"


def test_failed_run_resumes_at_the_failing_step(conf):
    rec = Recorder({"b": [1]})  # b fails once, then succeeds
    failed = run_pipeline(conf, [DAY, DAY + dt.timedelta(days=1)], [], "r1", steps=rec.steps("a", "b", "c"))
    assert failed.exit_code == 1
    assert statuses(failed) == {"a": "ok", "b": "failed", "c": "not_run"}
    assert rec.calls == [("a", DAY.isoformat()), ("b", DAY.isoformat())]  # the next date never started
    assert not (pipeline.state_dir(conf) / f"dt={DAY}" / "b.json").exists()
    rec.calls.clear()
    resumed = run_pipeline(conf, [DAY], [], "r2", steps=rec.steps("a", "b", "c"))
    assert resumed.exit_code == 0
    assert statuses(resumed) == {"a": "skipped", "b": "ok", "c": "ok"}
    assert [c[0] for c in rec.calls] == ["b", "c"]


@pytest.mark.parametrize("code", [1, 3, 4])
def test_a_failing_step_gives_the_run_its_exit_code_and_stops_the_day(conf, code):
    rec = Recorder({"train": [code]})
    result = run_pipeline(conf, [DAY], [], "r", steps=rec.steps("features", "train", "infer"))
    assert result.exit_code == code
    assert statuses(result) == {"features": "ok", "train": "failed", "infer": "not_run"}
    assert ("infer", DAY.isoformat()) not in rec.calls
    if code == 4:
        assert "infer not run" in result.steps[1].summary["note"]


def test_a_step_that_raises_is_mapped_to_its_exit_code(conf):
    def bad(argv):
        raise DataQualityError("quarantine rate 0.5 > 0.1")
    result = run_pipeline(conf, [DAY], [], "r", steps=[Step("curate", main=bad)])
    assert result.exit_code == 3 and result.steps[0].status == "failed"


def test_lock_refuses_a_second_run_while_held(conf):
    rec = Recorder()
    lock = RunLock(pipeline.state_dir(conf) / "lock", "holder")
    with lock.held():
        holder = json.loads(lock.path.read_text())
        assert holder["pid"] > 0 and holder["host"] == socket.gethostname() and holder["started_at"]
        with pytest.raises(PipelineLocked, match="held by"):
            run_pipeline(conf, [DAY], [], "second", steps=rec.steps("a"))
        assert rec.calls == [] and lock.path.exists()
    assert not lock.path.exists()  # released on exit
    assert run_pipeline(conf, [DAY], [], "third", steps=rec.steps("a")).exit_code == 0


def _write_lock(path: Path, pid: int, host: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": host, "started_at": "2026-11-01T00:00:00+00:00",
                                "run_id": "old"}))


def test_stale_lock_of_a_dead_process_is_recovered(conf):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    path = pipeline.state_dir(conf) / "lock"
    _write_lock(path, gone.pid, socket.gethostname())
    result = run_pipeline(conf, [DAY], [], "new", steps=Recorder().steps("a"))
    assert result.exit_code == 0 and result.stale_lock["pid"] == gone.pid
    assert not path.exists()


def test_lock_of_another_host_is_never_taken_over(conf):
    path = pipeline.state_dir(conf) / "lock"
    _write_lock(path, 1, "some-other-host")
    with pytest.raises(PipelineLocked):
        run_pipeline(conf, [DAY], [], "new", steps=Recorder().steps("a"))


def job_args(tmp_path: Path) -> list[str]:
    return ["--env", "local", "--conf-dir", str(ROOT / "conf"),
            "--set", f"warehouse={tmp_path / 'warehouse'}", "--set", f"landing={tmp_path / 'landing'}"]


def test_pipeline_job_usage_and_lock_exit_code_2(tmp_path, capsys):
    main = pipeline.load_job("pipeline").main
    assert main(["--from", "2026-11-01", *job_args(tmp_path)]) == 2
    assert main(["--from", "2026-11-02", "--to", "2026-11-01", *job_args(tmp_path)]) == 2
    assert main(["--date", "2026-11-01", "--step", "nope", *job_args(tmp_path)]) == 2
    _write_lock(tmp_path / "warehouse" / "_state" / "pipeline" / "lock", 1, "some-other-host")
    assert main(["--date", "2026-11-01", "--step", "ingest", *job_args(tmp_path)]) == 2
    assert "held by" in capsys.readouterr().err


def test_run_report_json_and_html(conf, tmp_path):
    rec = Recorder({"b": [3]})
    result = run_pipeline(conf, [DAY], [], "rep1", steps=rec.steps("a", "b", "c"))
    result.steps[0].summary = {"sources": {"events": {"silver_rows": 90, "quarantine_rows": 10,
                                                      "quarantine_rate": 0.1}}}
    result.steps[1].summary = {"model_version": "7", "gate": {"decision": "refused", "passed": False,
                                                              "metric": "auc", "challenger_value": 0.5,
                                                              "champion_value": 0.8, "reasons": ["worse"]}}
    result.closed_loop = [{"date": DAY.isoformat(), "metric": "auc", "model_version": "7", "decision": "refused",
                           "model_value": 0.5, "champion_version": "6", "champion_value": 0.8,
                           "served_date": "2026-11-02", "served_items": 40, "clicks": 6, "ctr": 0.15}]
    result.closed_loop_columns = dict(conf["closed_loop.reactions"])  # the app's: clicks, purchases, served CTR
    json_path, html_path = pipeline.write_report(result, pipeline.report_dir(conf))
    assert json_path == Path(conf.path("warehouse")) / "_reports" / "pipeline" / "rep1.json"
    data = json.loads(json_path.read_text())
    assert data["exit_code"] == 3
    assert [(s["step"], s["status"]) for s in data["steps"]] == [("a", "ok"), ("b", "failed"), ("c", "not_run")]
    html = html_path.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html
    assert "model version 7 refused: auc 0.5 vs champion 0.8; worse" in html
    assert "10 quarantined (10.00%)" in html and 'class="failed"' in html and "exit code <b>3</b>" in html
    assert data["closed_loop"][0]["ctr"] == 0.15
    assert "<h2>Closed loop</h2>" in html and "<th>holdout auc</th>" in html and "<th>served CTR</th>" in html
    assert "<td>2026-11-03</td><td>7</td><td>refused</td><td>0.5000</td><td>6</td><td>0.8000</td>" in html
    assert "<td>2026-11-02</td><td>-</td><td>40</td><td>6</td><td>-</td><td>0.1500</td></tr>" in html


def test_closed_loop_metrics_per_day_from_train_reports_and_datagen_manifests(conf):
    from lakeloop.closed_loop import daily_metrics, format_table
    from lakeloop_apps.recommender.datagen.files import write_manifest

    train = Path(conf.path("warehouse")) / "_reports" / "train"
    train.mkdir(parents=True)
    gate = {"metric": "auc", "decision": "promoted", "passed": True, "challenger_value": 0.9, "champion_value": 0.8,
            "champion_version": "1"}
    (train / "dt=2026-11-02.json").write_text(json.dumps({"model_version": "2", "gate": gate}))
    reactions = {"served_date": "2026-11-01", "served_model_version": "1", "served_items": 50, "events": 40,
                 "views": 30, "clicks": 7, "purchases": 3, "ctr": 0.14}
    write_manifest(conf.path("landing"), "2026-11-02", {"date": "2026-11-02", "reactions": reactions})
    rows = daily_metrics(conf, ["2026-11-01", "2026-11-02"])
    assert rows == [{"date": "2026-11-02", "model": None, "run_id": None, "mlflow_run_id": None, "metric": "auc",
                     "model_version": "2", "decision": "promoted",
                     "model_value": 0.9, "champion_version": "2", "champion_value": 0.9,
                     "served_date": "2026-11-01", "served_model_version": "1", "served_items": 50,
                     "reaction_events": 40, "views": 30, "clicks": 7, "purchases": 3, "ctr": 0.14}]
    header, line = format_table(rows, conf["closed_loop.reactions"])
    assert header.split()[:4] == ["date", "model", "gate", "holdout"] and "0.1400" in line and "promoted" in line


def test_a_failed_train_run_replaces_the_dates_earlier_outcome_in_the_closed_loop(spark, conf):
    """The date's train report is the latest run's: a real train run that fails (no training set) after a
    promoted one shows as failed with its own run id, never as the earlier run's promotion."""
    from lakeloop.closed_loop import daily_metrics
    from lakeloop.errors import LakeloopError
    from lakeloop.train.run import train_for_date

    train = Path(conf.path("warehouse")) / "_reports" / "train"
    train.mkdir(parents=True)
    earlier = {"model_version": "2", "job_run_id": "r1", "status": "ok",
               "gate": {"metric": "auc", "decision": "promoted", "challenger_value": 0.915}}
    (train / "dt=2026-11-02.json").write_text(json.dumps(earlier))
    assert daily_metrics(conf, ["2026-11-02"])[0]["decision"] == "promoted"
    with pytest.raises(LakeloopError):
        train_for_date(spark, conf, dt.date(2026, 11, 2), tags={"lakeloop.job_run_id": "r2"})
    (row,) = daily_metrics(conf, ["2026-11-02"])
    assert (row["decision"], row["run_id"], row.get("model_value")) == ("failed", "r2", None)
    assert "training_set" in row["error"]


def test_datagen_step_comes_first_with_the_datagen_option():
    assert [s.name for s in pipeline._selected(None, datagen=True)] == ["datagen", *[s.name for s in DAILY_STEPS]]
    assert [s.name for s in pipeline._selected(["infer", "datagen"], datagen=True)] == ["datagen", "infer"]
    with pytest.raises(pipeline.ConfError, match="not a pipeline step"):
        pipeline._selected(["datagen"])


def build_small_warehouse(tmp_path: Path, date: str = "2026-11-03", events: int = 1500) -> list[str]:
    """datagen for one small day, then the pipeline's ingest -> curate -> validate -> features; returns job args."""
    args = job_args(tmp_path)
    assert pipeline.load_job("datagen").main(["--date", date, "--events", str(events), *args]) == 0
    steps = [x for s in ("ingest", "curate", "validate", "features") for x in ("--step", s)]
    assert pipeline.load_job("pipeline").main(["--date", date, *steps, *args]) == 0
    return args


@pytest.mark.slow
def test_real_jobs_end_to_end_then_skipped(spark, tmp_path):
    args = build_small_warehouse(tmp_path)
    warehouse = tmp_path / "warehouse"
    state = warehouse / "_state" / "pipeline" / "dt=2026-11-03"
    assert sorted(p.stem for p in state.glob("*.json")) == ["curate", "features", "ingest", "validate"]
    (first,) = (warehouse / "_reports" / "pipeline").glob("*.json")
    report = json.loads(first.read_text())
    curate = next(s for s in report["steps"] if s["step"] == "curate")
    events = curate["summary"]["sources"]["events"]
    assert events["reconciled"] and events["bronze_rows"] == events["silver_rows"] + events["quarantine_rows"]
    assert 0 < events["quarantine_rate"] < 0.5  # datagen writes a few bad records on purpose
    steps = [x for s in ("ingest", "curate", "validate", "features") for x in ("--step", s)]
    assert pipeline.load_job("pipeline").main(["--date", "2026-11-03", *steps, *args]) == 0
    second = max((warehouse / "_reports" / "pipeline").glob("*.json"), key=lambda p: p.stat().st_mtime)
    assert {s["status"] for s in json.loads(second.read_text())["steps"]} == {"skipped"}


def _airflow_module():
    spec = importlib.util.spec_from_file_location("lakeloop_daily", ROOT / "airflow" / "lakeloop_daily.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_airflow_dag_commands_follow_the_pipeline_steps():
    dag = _airflow_module()
    assert list(dag.STEPS) == [s.name for s in DAILY_STEPS]
    assert dag.step_command("curate") == ("cd {{ var.value.get('lakeloop_home', '/opt/lakeloop') }} && "
                                          "./spark-submit.sh curate --env {{ var.value.get('lakeloop_env', 'yarn') }}"
                                          " --date {{ (data_interval_end.in_timezone('UTC') - "
                                          "macros.timedelta(days=1)).strftime('%Y-%m-%d') }}")
    assert dag.step_command("infer", home="/opt/my lakeloop", env="local", date="2026-11-03") == (
        "cd '/opt/my lakeloop' && ./spark-submit.sh infer --env local --date 2026-11-03")
    assert "spark-submit.sh pipeline --env" in dag.pipeline_command()
    with pytest.raises(ValueError):
        dag.step_command("rm -rf")
    for job in dag.STEPS:  # every command names a job that exists
        assert pipeline.load_job(job) is not None


def test_airflow_dag_file_defines_one_task_per_step_in_order():
    """One operator call in a loop over STEPS, each task running its step's command (exit codes 3/4 are
    distinct, not retried: tests/test_airflow.py)."""
    tree = ast.parse((ROOT / "airflow" / "lakeloop_daily.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "PythonOperator"]
    assert len(calls) == 2 and all({k.arg for k in c.keywords} >= {"task_id", "python_callable", "op_kwargs"}
                                   for c in calls)
    calls.sort(key=lambda c: any(k.arg == "trigger_rule" for k in c.keywords))  # the steps' call, then maintenance
    maintenance = {k.arg: k.value for k in calls[1].keywords}
    assert ast.literal_eval(maintenance["trigger_rule"]) == "all_done"
    assert getattr(maintenance["task_id"], "id", "") == "MAINTENANCE"
    loop = next(n for n in ast.walk(tree) if isinstance(n, ast.For) and calls[0] in list(ast.walk(n)))
    assert isinstance(loop.iter, ast.Name) and loop.iter.id == "STEPS"
    chained = [n for n in ast.walk(loop) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.RShift)]
    assert chained, "tasks are chained in STEPS order"
    dag_call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "DAG")
    keywords = {k.arg: k.value for k in dag_call.keywords}
    assert ast.literal_eval(keywords["dag_id"]) == "lakeloop_daily"
    assert ast.literal_eval(keywords["max_active_runs"]) == 1
    assert "retries" in (ROOT / "airflow" / "lakeloop_daily.py").read_text()


def test_crontab_example_runs_the_pipeline_job():
    lines = [x for x in (ROOT / "airflow" / "crontab.example").read_text().splitlines()
             if x.strip() and not x.startswith("#") and "=" not in x.split()[0]]
    assert lines and all(len(x.split()) > 5 for x in lines)
    assert [x.split("spark-submit.sh ", 1)[1].split()[0] for x in lines] == ["pipeline", "pipeline", "optimize"]


_DAGBAG_CHECK = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get("lakeloop_daily")
print(json.dumps({"errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "dags": sorted(bag.dags),
                  "tasks": [t.task_id for t in dag.tasks] if dag else [],
                  "downstream": {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks} if dag else {},
                  "commands": {t.task_id: t.op_kwargs["command"] for t in dag.tasks} if dag else {},
                  "retries": dag.default_args.get("retries") if dag else None,
                  "max_active_runs": dag.max_active_runs if dag else None}))
"""


def test_airflow_dagbag_loads_the_dag_with_tasks_chained_in_step_order(tmp_path):
    if importlib.util.find_spec("airflow") is None:
        pytest.skip("apache-airflow is not installed (it is in the dev extra: ./setup.sh dev)")
    # a process of its own: importing Airflow configures logging and settings for the whole interpreter
    env = {"AIRFLOW_HOME": str(tmp_path / "airflow_home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", _DAGBAG_CHECK, str(ROOT / "airflow")], env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["errors"] == {} and found["dags"] == ["lakeloop_daily"]
    steps = [s.name for s in DAILY_STEPS] + ["optimize"]  # table maintenance after the last step
    assert found["tasks"] == steps
    assert found["downstream"] == {a: ([b] if b else []) for a, b in zip(steps, steps[1:] + [None], strict=True)}
    dag = _airflow_module()
    assert found["commands"] == {s: dag.step_command(s) for s in steps}
    assert found["retries"] == 2 and found["max_active_runs"] == 1
