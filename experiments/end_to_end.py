# Databricks notebook source
# MAGIC %md
# MAGIC # End to end: featurize → train → tune → compare runs → promote → predict
# MAGIC
# MAGIC The whole project in one notebook, each step one call into `sparkles` (the same code the
# MAGIC `MLproject` entry points and the `sparkles` CLI run). Features are computed once, by the
# MAGIC first step; training and the search read them from the feature store and never run the
# MAGIC CNN.
# MAGIC
# MAGIC Runs unchanged on Databricks or locally as plain Python
# MAGIC (`python experiments/end_to_end.py`).
# MAGIC `SPARKLES_PROFILE` names the profile (default `local`, the bundled sample) and
# MAGIC `SPARKLES_SET` holds space-separated `KEY=VALUE` overrides, e.g.
# MAGIC `train.classifier=mlp` to do all of it with the perceptron.

# COMMAND ----------

import os
import shlex
from pathlib import Path

import mlflow
import pandas as pd

from sparkles import tracking
from sparkles.commands import run_featurize, run_train, run_tune
from sparkles.config import load_profile
from sparkles.deploy.predict import predict
from sparkles.deploy.registry import promote
from sparkles.session import build_session

profile = load_profile(
    os.environ.get("SPARKLES_PROFILE", "local"), shlex.split(os.environ.get("SPARKLES_SET", ""))
)
spark = build_session(profile)
output = Path(os.environ.get("SPARKLES_NOTEBOOK_OUTPUT", "notebook-output")) / "end_to_end"
experiment = profile.mlflow.experiment
metric = profile.registry.metric

# COMMAND ----------

# MAGIC %md ## 1. Featurize: the CNN runs on the images the feature store lacks

# COMMAND ----------

featurized = run_featurize(profile, spark)
counts = featurized.counts
print(
    f"{counts['rows_in']} labelled images: {counts['featurized']} featurized, "
    f"{counts['quarantined']} quarantined; {counts['computed_images']} through the CNN"
)

# COMMAND ----------

# MAGIC %md ## 2. Train the profile's classifier

# COMMAND ----------

trained = run_train(profile, spark)
print({k: trained["metrics"][k] for k in ("accuracy", "f1", "auc")})

# COMMAND ----------

# MAGIC %md ## 3. Tune: a grid over the classifier's own space, on the cached features

# COMMAND ----------

tuned = run_tune(
    profile.model_copy(update={"tune": profile.tune.model_copy(update={"method": "grid"})}), spark
)
print(f"{tuned['trials']} trials; best {tuned['best']}")

# COMMAND ----------

# MAGIC %md ## 4. Compare runs: every model that scores images, best validation metric first

# COMMAND ----------

tracking.configure(profile)
runs = mlflow.search_runs(
    experiment_names=[experiment],
    filter_string="attributes.status = 'FINISHED' and tags.`sparkles.model.scores_images` = 'true'",
    order_by=[f"metrics.val_{metric} DESC"],
)
shown = [
    "tags.mlflow.runName",
    "params.classifier",
    f"metrics.val_{metric}",
    "metrics.accuracy",
    "metrics.f1",
    "metrics.auc",
]
print(runs[[c for c in shown if c in runs]].to_string(index=False))

# COMMAND ----------

# MAGIC %md ## 5. Promote: the best run on validation becomes `challenger`, and `champion` if it
# MAGIC beats the current one on images neither model trained on

# COMMAND ----------

decision = promote(profile, experiment)
print(f"{decision.model_name} v{decision.version}: {decision.decision} ({decision.evaluation})")

# COMMAND ----------

# MAGIC %md ## 6. Predict with the champion: one probability per class, bad images quarantined

# COMMAND ----------

result = predict(
    spark,
    f"models:/{profile.registry.model_name}@champion",
    images=f"{profile.data.images.rstrip('/')}/{profile.data.image_glob}",
    output=str(output / "predictions"),
)
print(f"{result.images} images: {result.scored} scored, {result.quarantined} quarantined")
print(pd.read_parquet(output / "predictions" / "predictions").head(8).to_string(index=False))
