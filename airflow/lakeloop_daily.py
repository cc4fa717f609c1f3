"""Airflow DAG ``lakeloop_daily``: the daily pipeline, one BashOperator per step.

Each task runs ``spark-submit.sh <job> --env <env> --date <day>``, where ``<day>`` is the day that ended
before the run: the day before the data interval's end (with the DAG's daily ``CronDataIntervalTimetable``
that is the interval's start date; with a trigger timetable, where Airflow 3 makes ``{{ ds }}`` the day the
run starts, it is still the day before).  Every job is idempotent for its
date, so Airflow retries and manual re-runs replace a date's output instead of duplicating it.  Set the
Airflow Variables ``lakeloop_home`` (the project checkout on the worker) and ``lakeloop_env``
(``local``, ``standalone`` or ``yarn``).

Exit codes of every task (``lakeloop.errors``):

* 0 -- done.
* 1 -- unexpected error (lost executor, full disk...): the retries below are for this case.
* 2 -- usage/configuration error, or another pipeline run holds the lock.
* 3 -- data-quality gate (curate quarantine rate, validate drift); downstream tasks do not run.
* 4 -- the model gate refused the challenger: ``train`` fails, ``infer`` does not run, the serving store
  keeps the ``@champion`` scores already published.

Only exit code 1 is retried (:func:`run_step` raises ``AirflowException``); 2, 3 and 4 fail the task at once
with ``AirflowFailException`` and a message saying which outcome it was: retrying them would give the same
answer until someone fixes the conf, the data or the model.

The alternative single-task layout, ``spark-submit.sh pipeline --env <env> --date {{ ds }}``, is
:func:`pipeline_command`; it adds the pipeline's completion markers and lock (see docs/pipeline.md).
"""

from __future__ import annotations

import datetime as dt
import shlex

STEPS = ("ingest", "curate", "validate", "features", "train", "infer")
# table maintenance after the steps, whatever they ended with: compaction of the run date's partitions and vacuum
MAINTENANCE = "optimize"
ENV_TEMPLATE = "{{ var.value.get('lakeloop_env', 'yarn') }}"
HOME_TEMPLATE = "{{ var.value.get('lakeloop_home', '/opt/lakeloop') }}"
# the day that ended: works for data-interval and trigger timetables alike
DATE_TEMPLATE = "{{ (data_interval_end.in_timezone('UTC') - macros.timedelta(days=1)).strftime('%Y-%m-%d') }}"
NO_RETRY = {2: "usage/configuration error or the pipeline lock is held", 3: "data-quality gate failed",
            4: "model gate refused the challenger (serving keeps the champion)"}


def step_command(job: str, home: str = HOME_TEMPLATE, env: str = ENV_TEMPLATE, date: str = DATE_TEMPLATE) -> str:
    """The bash command of one task: ``cd <home> && ./spark-submit.sh <job> --env <env> --date <date>``."""
    if job not in (*STEPS, MAINTENANCE, "pipeline"):
        raise ValueError(f"unknown lakeloop job {job!r}")
    quote = (lambda s: s) if "{{" in home else shlex.quote
    return f"cd {quote(home)} && ./spark-submit.sh {job} --env {env} --date {date}"


def pipeline_command(home: str = HOME_TEMPLATE, env: str = ENV_TEMPLATE, date: str = DATE_TEMPLATE) -> str:
    """The one-task alternative: the whole DAG through ``jobs/pipeline.py``."""
    return step_command("pipeline", home, env, date)


def run_step(command: str) -> None:
    """Run one task's ``command`` with bash; exit code 1 may be retried, 2-4 fail the task for good."""
    import subprocess

    from airflow.exceptions import AirflowException, AirflowFailException

    proc = subprocess.Popen(["bash", "-c", command])
    try:
        code = proc.wait()
    finally:
        if proc.poll() is None:  # the task was killed: do not leave the job running
            proc.terminate()
            proc.wait()
    if code in NO_RETRY:
        raise AirflowFailException(f"exit code {code}: {NO_RETRY[code]}; not retried")
    if code != 0:
        raise AirflowException(f"exit code {code}: unexpected error; Airflow retries it")


def build_dag():
    """The DAG object (needs Airflow; this module's command builders do not)."""
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG
    from airflow.timetables.interval import CronDataIntervalTimetable

    default_args = {"owner": "lakeloop", "retries": 2, "retry_delay": dt.timedelta(minutes=10),
                    "retry_exponential_backoff": True}
    with DAG(dag_id="lakeloop_daily", schedule=CronDataIntervalTimetable("30 2 * * *", timezone="UTC"),
             start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
             catchup=False, max_active_runs=1, default_args=default_args,
             tags=["lakeloop"], doc_md=__doc__) as dag:
        previous = None
        for job in STEPS:
            task = PythonOperator(task_id=job, python_callable=run_step, op_kwargs={"command": step_command(job)})
            if previous is not None:
                previous >> task
            previous = task
        previous >> PythonOperator(task_id=MAINTENANCE, python_callable=run_step, trigger_rule="all_done",
                                   op_kwargs={"command": step_command(MAINTENANCE)})
    return dag


try:
    dag = build_dag()
except ImportError:  # imported without Airflow (tests, docs): only the command builders are available
    dag = None
