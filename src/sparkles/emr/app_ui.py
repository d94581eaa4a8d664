"""EMR's persistent Spark History Server (it outlives the cluster) for the application a step's
run started: CreatePersistentAppUI on the cluster's ARN, then GetPersistentAppUIPresignedURL
for that application (EMR API Reference; played in tests/emr/standin.py)."""

from __future__ import annotations

from typing import Any

from mlflow.tracking import MlflowClient

from sparkles.emr.transient import say
from sparkles.names import EMR_HISTORY_TAG, SPARK_APP_TAG


def console_page(emr: Any, cluster_id: str) -> str:
    """The cluster's page in the EMR console (its *Applications* tab opens the persistent UIs)."""
    region = emr.meta.region_name
    return (
        f"https://{region}.console.aws.amazon.com/emr/home?region={region}"
        f"#/clusterDetails/{cluster_id}"
    )


def link_history_server(emr: Any, cluster_id: str, run_id: str) -> None:
    """Tag the run with its persistent UI's id and the console page, and print a presigned link
    (it expires, so it is not kept). The step's run says which application it ran
    (``sparkles.spark.app_id``); a run that started none gets nothing."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = MlflowClient()
    app_id = client.get_run(run_id).data.tags.get(SPARK_APP_TAG)
    if not app_id:
        return
    page = console_page(emr, cluster_id)
    try:
        arn = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["ClusterArn"]
        ui = emr.create_persistent_app_ui(TargetResourceArn=arn)["PersistentAppUIId"]
        client.set_tag(run_id, EMR_HISTORY_TAG, f"{ui} {page}")
        link = emr.get_persistent_app_ui_presigned_url(
            PersistentAppUIId=ui, PersistentAppUIType="SHS", ApplicationId=app_id
        )
    except (BotoCoreError, ClientError) as err:  # the run is done: say it, do not fail it
        say(f"no Spark History Server link for {app_id}: {err}")
        return
    if link.get("PresignedURLReady") and link.get("PresignedURL"):
        say(f"Spark History Server of {app_id} (this link expires): {link['PresignedURL']}")
    else:
        say(
            f"the Spark History Server of {app_id} is not ready yet: the cluster's page in the "
            f"EMR console has it ({page})"
        )
