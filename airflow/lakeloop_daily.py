"""Airflow DAG ``lakeloop_daily``: the daily pipeline, one BashOperator per step.

Each task runs ``spark-submit.sh <job> --env <env> --date {{ ds }}``; every job is idempotent for its
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

Airflow retries every non-zero exit code alike; retrying 2-4 is harmless (each job is idempotent for its
date) but gives the same answer until someone fixes the data, the conf or the model.

The alternative single-task layout, ``spark-submit.sh pipeline --env <env> --date {{ ds }}``, is
:func:`pipeline_command`; it adds the pipeline's completion markers and lock (see docs/pipeline.md).
"""

from __future__ import annotations

import datetime as dt
import shlex

STEPS = ("ingest", "curate", "validate", "features", "train", "infer")
ENV_TEMPLATE = "{{ var.value.get('lakeloop_env', 'yarn') }}"
HOME_TEMPLATE = "{{ var.value.get('lakeloop_home', '/opt/lakeloop') }}"
DATE_TEMPLATE = "{{ ds }}"


def step_command(job: str, home: str = HOME_TEMPLATE, env: str = ENV_TEMPLATE, date: str = DATE_TEMPLATE) -> str:
    """The bash command of one task: ``cd <home> && ./spark-submit.sh <job> --env <env> --date <date>``."""
    if job not in STEPS and job != "pipeline":
        raise ValueError(f"unknown lakeloop job {job!r}")
    quote = (lambda s: s) if "{{" in home else shlex.quote
    return f"cd {quote(home)} && ./spark-submit.sh {job} --env {env} --date {date}"


def pipeline_command(home: str = HOME_TEMPLATE, env: str = ENV_TEMPLATE, date: str = DATE_TEMPLATE) -> str:
    """The one-task alternative: the whole DAG through ``jobs/pipeline.py``."""
    return step_command("pipeline", home, env, date)


def build_dag():
    """The DAG object (needs Airflow; this module's command builders do not)."""
    try:
        from airflow.providers.standard.operators.bash import BashOperator
    except ImportError:  # Airflow 2
        from airflow.operators.bash import BashOperator
    from airflow import DAG

    default_args = {"owner": "lakeloop", "retries": 2, "retry_delay": dt.timedelta(minutes=10),
                    "retry_exponential_backoff": True}
    with DAG(dag_id="lakeloop_daily", schedule="30 2 * * *", start_date=dt.datetime(2026, 11, 1),
             catchup=False, max_active_runs=1, default_args=default_args,
             tags=["lakeloop"], doc_md=__doc__) as dag:
        previous = None
        for job in STEPS:
            task = BashOperator(task_id=job, bash_command=step_command(job))
            if previous is not None:
                previous >> task
            previous = task
    return dag


try:
    dag = build_dag()
except ImportError:  # imported without Airflow (tests, docs): only the command builders are available
    dag = None
