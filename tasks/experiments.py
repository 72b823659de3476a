"""The MLflow experiments the pipeline logs to, created as machine-learning experiments.

MLflow 3 records an experiment's kind in the tag ``mlflow.experimentKind``: ``genai_development`` for
GenAI apps (traces first), ``custom_model_development`` for trained models (runs first). Every
experiment this project creates (``mlflow.experiment`` for trainings and searches,
``mlflow.monitoring_experiment`` for drift) is a custom-model one; an existing experiment without the
tag gets it on first use, and one whose kind someone chose keeps it.

The MLflow 3.17 UI takes the landing tab from its workflow switch instead (GenAI / Model training at
the top of the sidebar, remembered per browser, GenAI until changed), so a fresh browser opens any
experiment on the GenAI overview. A link that must open on the runs carries
``?workflowType=machine_learning`` (``runs_page_url``), which also sets the switch for that page.
"""

from __future__ import annotations

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CUSTOM_MODEL_DEVELOPMENT = "custom_model_development"
# The UI's own values of the workflow switch and of an experiment page's runs tab.
_ML_WORKFLOW = "machine_learning"
_RUNS_TAB = "runs"


def ensure_experiment(client, name: str, artifact_location: str) -> str:
    """Id of experiment ``name``: created with ``artifact_location`` and the custom-model kind when
    missing; an existing one without a kind tag is given it (one that has a kind keeps it)."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(
                name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: CUSTOM_MODEL_DEVELOPMENT}
            )
        except MlflowException:
            # Another process created it between the lookup and the create.
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, CUSTOM_MODEL_DEVELOPMENT)
    return exp.experiment_id


def runs_page_url(ui_url: str, experiment_id: str) -> str:
    """The MLflow UI page listing the runs of ``experiment_id``, whatever the browser's workflow switch says."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/{_RUNS_TAB}?workflowType={_ML_WORKFLOW}"


def experiment_runs_url(client, name: str, ui_url: str) -> str | None:
    """``runs_page_url`` of experiment ``name``; None while it does not exist (nothing trained yet)."""
    exp = client.get_experiment_by_name(name)
    return None if exp is None else runs_page_url(ui_url, exp.experiment_id)
