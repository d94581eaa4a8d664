# Databricks notebook source
# MAGIC %md
# MAGIC # The model registry
# MAGIC
# MAGIC Lists the registered model's versions with their aliases and promotion tags, loads the
# MAGIC `champion`, and scores a few images with it.

# COMMAND ----------

import os
import shlex

import mlflow
from pyspark.sql import functions as F

from sparkles import tracking
from sparkles.config import load_profile
from sparkles.data.sample import ensure_sample
from sparkles.session import build_session

profile = load_profile(
    os.environ.get("SPARKLES_PROFILE", "local"), shlex.split(os.environ.get("SPARKLES_SET", ""))
)
tracking.configure(profile)
client = mlflow.MlflowClient()
name = profile.registry.model_name

# COMMAND ----------

# MAGIC %md ## Versions and aliases

# COMMAND ----------

model = client.get_registered_model(name)
aliases = {version: alias for alias, version in model.aliases.items()}
for version in sorted(
    client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version)
):
    decision = version.tags.get("sparkles.promotion.decision", "-")
    score = version.tags.get("sparkles.promotion.challenger_score", "-")
    alias = aliases.get(version.version, "")
    print(f"v{version.version:>3}  {alias:<10}  run {version.run_id}  {decision}  score {score}")

# COMMAND ----------

# MAGIC %md ## Score a few images with the champion

# COMMAND ----------

ensure_sample(profile)
spark = build_session(profile)
champion = mlflow.spark.load_model(f"models:/{name}@champion")
images = (
    spark.read.format("binaryFile")
    .option("pathGlobFilter", profile.data.image_glob)
    .load(profile.data.images)
    .select("path", "content")
    .limit(8)
)
scored = champion.transform(images).select(
    F.element_at(F.split("path", "/"), -1).alias("file"), "prediction", "featurize_error"
)
scored.show(truncate=False)
