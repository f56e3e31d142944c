"""Runs inside ``.venv-airflow`` (Airflow 3 cannot live in ``.venv``): loads a DAG folder the
way Airflow's DAG processor does and prints what tests/test_airflow_dag.py checks, as JSON.

    python airflow_probe.py parse DAG_FOLDER RUN_AFTER   # import errors, DAGs, tasks, commands
    python airflow_probe.py run DAG_FOLDER DAG_ID RUN_AFTER...   # DAG runs (dag.test()), states

``run`` needs a metadata database (``airflow db migrate`` first); ``parse`` needs none.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from types import SimpleNamespace
from typing import Any


def parse(folder: str, run_after: datetime) -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    bag = DagBag(dag_folder=folder, safe_mode=False)
    dags: dict[str, Any] = {}
    for dag_id, dag in bag.dags.items():
        # What the DAG processor stores for the scheduler: a DAG that does not serialize never runs.
        DagSerialization.serialize_dag(dag)
        context = {"dag_run": SimpleNamespace(run_after=run_after, logical_date=run_after)}
        tasks = []
        for op in dag.topological_sort():
            # @task.bash: the callable returns the command, which is then rendered as a template.
            if hasattr(op, "python_callable"):
                command = op.python_callable(*op.op_args, **op.op_kwargs)
            else:
                command = op.bash_command
            tasks.append(
                {
                    "task_id": op.task_id,
                    "operator": op.task_type,
                    "upstream": sorted(op.upstream_task_ids),
                    "retries": op.retries,
                    "cwd": op.cwd,
                    "command": command,
                    "rendered": op.render_template(command, context),
                }
            )
        dags[dag_id] = {
            "schedule": str(dag.schedule),
            "timetable": type(dag.timetable).__name__,
            "cron": getattr(dag.timetable, "expression", None),
            "timezone": str(getattr(dag.timetable, "timezone", None)),
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "tasks": tasks,
        }
    return {"import_errors": bag.import_errors, "dags": dags}


def run(folder: str, dag_id: str, runs_after: list[datetime]) -> list[dict[str, Any]]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=folder, safe_mode=False)
    dag = bag.dags[dag_id]
    results = []
    for run_after in runs_after:
        dag_run = dag.test(run_after=run_after, logical_date=run_after)
        states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
        results.append({"state": str(dag_run.state), "tasks": states})
    return results


def main(argv: list[str]) -> None:
    result: dict[str, Any] | list[dict[str, Any]]
    match argv:
        case ["parse", folder, run_after]:
            result = parse(folder, datetime.fromisoformat(run_after))
        case ["run", folder, dag_id, *runs_after] if runs_after:
            result = run(folder, dag_id, [datetime.fromisoformat(r) for r in runs_after])
        case _:
            raise SystemExit(__doc__)
    # Airflow logs to stdout too: the result is the last line.
    print("\n" + json.dumps(result, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
