"""Daily retraining of OpenClaw's model.

Each task runs one step of ``openclaw pipeline`` (the same commands ``openclaw pipeline run``
chains), in order: extract, train, validate, register, package, canary. A failing step, the
validation gate above all, fails its task, and the steps after it do not run. Settings (the
telemetry store, the registry, the service's admin URL and token, ...) come from the worker's
``OPENCLAW_*`` environment variables, which the tasks inherit; ``openclaw`` must be on its PATH.
The tasks run in the directory the Airflow Variable ``openclaw_workdir`` names
(``/var/lib/openclaw`` when it is not set).
See docs/airflow.md.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import dag, task

# One pipeline run per DAG run, named after the DAG run's run_after: always set in Airflow 3
# (a manual run may have no logical date), the same for every try of every task in the DAG run,
# so a retried or cleared task resumes its pipeline run and the steps it finished are no-ops.
RUN_ID = "airflow-{{ dag_run.run_after | ts_nodash }}"
# Every step in one working directory, as `openclaw pipeline run` in a shell would be, so the
# relative defaults of the settings (./pipeline, ./models, the DuckDB telemetry file) name the
# same files in every task; without a cwd, each task would run in a temporary directory of its
# own. The Airflow Variable openclaw_workdir moves it; it must exist on every worker.
WORKDIR = "{{ var.value.get('openclaw_workdir', '/var/lib/openclaw') }}"


@task.bash(cwd=WORKDIR)
def pipeline_step(step: str) -> str:
    """The command of one step; Airflow renders RUN_ID's template before running it."""
    return f"openclaw pipeline {step} --run {RUN_ID}"


@dag(
    dag_id="openclaw_retrain",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    # A missed day is not worth replaying: the next run trains on the latest telemetry anyway.
    catchup=False,
    # Two retrainings at once would race for the registry's challenger and the canary.
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(hours=3),
    },
    tags=["openclaw"],
    doc_md=__doc__,
)
def openclaw_retrain() -> None:
    extract = pipeline_step.override(task_id="extract")("extract")
    train = pipeline_step.override(task_id="train")("train")
    # The gate's verdict on the same model and data does not change on a retry.
    validate = pipeline_step.override(task_id="validate", retries=0)("validate")
    register = pipeline_step.override(task_id="register")("register")
    package = pipeline_step.override(task_id="package")("package")
    canary = pipeline_step.override(task_id="canary")("canary")
    extract >> train >> validate >> register >> package >> canary


openclaw_retrain()
