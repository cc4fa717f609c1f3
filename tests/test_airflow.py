"""The Airflow 3 DAG: the date a run processes, and which exit codes are retried (a DagBag in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("airflow.sdk")

SCRIPT = r'''
import json, sys
import pendulum
from airflow.dag_processing.dagbag import DagBag
from airflow.exceptions import AirflowException, AirflowFailException
from airflow.sdk.execution_time import macros

bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dag = bag.dags["lakeloop_daily"]
var = {"value": type("V", (), {"get": staticmethod(lambda k, d=None: d)})()}
out = {"tasks": [t.task_id for t in dag.tasks]}
run_after = pendulum.datetime(2026, 11, 22, 2, 30, tz="UTC")       # the run that starts on Nov 22
interval = dag.timetable.infer_manual_data_interval(run_after=run_after)
task = dag.get_task("train")
render = lambda end: task.render_template(task.op_kwargs, {"data_interval_end": end, "macros": macros,
                                                              "var": var})["command"]
out["command"] = render(interval.end)
out["trigger_command"] = render(run_after)  # a trigger timetable: data_interval_end == the logical date
out["retries"] = {t.task_id: t.retries for t in dag.tasks}
out["optimize"] = {"upstream": sorted(dag.get_task("optimize").upstream_task_ids),
                   "trigger_rule": getattr(dag.get_task("optimize").trigger_rule, "value", None)}
module = __import__("lakeloop_daily")
outcomes = {}
for code in (0, 1, 2, 3, 4):
    try:
        module.run_step(f"exit {code}")
        outcomes[code] = "ok"
    except AirflowFailException as exc:
        outcomes[code] = "fail: " + str(exc)
    except AirflowException as exc:
        outcomes[code] = "retry: " + str(exc)
out["outcomes"] = outcomes
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow")
    path = f"{ROOT / 'airflow'}:{os.environ.get('PYTHONPATH', '')}"
    env = {**os.environ, "AIRFLOW_HOME": str(home), "PYTHONPATH": path}
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "airflow")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_a_run_processes_the_day_that_ended(rendered):
    assert rendered["tasks"] == ["ingest", "curate", "validate", "features", "train", "infer", "optimize"]
    # maintenance runs after the last step whatever it ended with
    assert rendered["optimize"] == {"upstream": ["infer"], "trigger_rule": "all_done"}
    assert rendered["command"] == "cd /opt/lakeloop && ./spark-submit.sh train --env yarn --date 2026-11-21"
    assert rendered["trigger_command"] == rendered["command"]


def test_only_exit_code_1_is_retried(rendered):
    assert set(rendered["retries"].values()) == {2}
    outcomes = {int(k): v for k, v in rendered["outcomes"].items()}
    assert outcomes[0] == "ok"
    assert outcomes[1].startswith("retry: exit code 1")
    assert outcomes[3] == "fail: exit code 3: data-quality gate failed; not retried"
    assert outcomes[4].startswith("fail: exit code 4: model gate refused")
    assert outcomes[2].startswith("fail: exit code 2")


def test_crontab_line_runs_with_only_what_it_sets(tmp_path):
    """Each schedule line of airflow/crontab.example, run as cron would (its variables, /bin/bash), as a dry run."""
    import datetime as dt

    lines = (ROOT / "airflow" / "crontab.example").read_text().splitlines()
    assign = dict(line.split("=", 1) for line in lines if line and not line.startswith("#") and "=" in line.split()[0])
    jobs = [line.split(None, 5)[5] for line in lines if line[:1].isdigit()]
    assert len(jobs) == 3
    env_file = tmp_path / "lakeloop.env"
    env_file.write_text(f"export LAKELOOP_PYTHON={sys.executable}\n"
                        "export LAKELOOP_MLFLOW_URI=http://mlflow.example:5000\n"
                        "export LAKELOOP_REDIS_HOST=redis.example\nexport PATH=/usr/bin:/bin\n")
    cron_env = {**assign, "LAKELOOP_HOME": str(ROOT), "LAKELOOP_ENV_FILE": str(env_file),
                "LAKELOOP_LOG": str(tmp_path / "pipeline.log"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    for command in jobs:
        job = command.split("spark-submit.sh ", 1)[1].split()[0]
        command = command.replace("\\%", "%").replace(f"spark-submit.sh {job}", f"spark-submit.sh {job} --dry-run")
        res = subprocess.run([cron_env["SHELL"], "-c", command], env=cron_env, capture_output=True, text=True,
                             timeout=120)
        log = (tmp_path / "pipeline.log").read_text()
        assert res.returncode == 0, log
        line = log.strip().splitlines()[-1]
        assert f"jobs/{job}.py --env yarn --set spark.submit.deployMode=client --date {yesterday}" in line
        assert "--deploy-mode client" in line
        assert job == "optimize" or "--state-dir /var/lib/lakeloop/state" in line
