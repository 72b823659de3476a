"""The MLflow experiments the pipeline logs to, created as machine-learning experiments.

MLflow 3 marks an experiment's kind with the tag ``mlflow.experimentKind``: ``genai_development``
experiments open on traces, ``custom_model_development`` ones on their training runs. Every experiment
this project creates (``mlflow.experiment`` for trainings and searches, ``mlflow.monitoring_experiment``
for drift) is a custom-model one; an existing experiment without the tag gets it on first use.

The MLflow 3.17 UI picks an experiment's landing tab from its global workflow switch (GenAI /
Machine learning, kept per browser, GenAI until changed) rather than from this tag, so a link that
must open on the runs also carries ``?workflowType=machine_learning`` (``runs_page_url``).
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
