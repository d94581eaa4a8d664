# Databricks notebook source
# MAGIC %md
# MAGIC # Comparing runs
# MAGIC
# MAGIC Loads the experiment's runs with `mlflow.search_runs`, tabulates accuracy, F1 and AUC of
# MAGIC every trained model, and plots them; then looks inside the latest search: the validation
# MAGIC metric of each trial against regParam and elasticNetParam.

# COMMAND ----------

import os
import shlex
from pathlib import Path

import mlflow
from matplotlib.figure import Figure

from sparkles import tracking
from sparkles.config import load_profile

profile = load_profile(
    os.environ.get("SPARKLES_PROFILE", "local"), shlex.split(os.environ.get("SPARKLES_SET", ""))
)
experiment_id = tracking.configure(profile)
output = Path(os.environ.get("SPARKLES_NOTEBOOK_OUTPUT", "notebook-output")) / "compare_runs"
output.mkdir(parents=True, exist_ok=True)

# COMMAND ----------

# MAGIC %md ## Every trained model (main, train, and the refit winner of each search)

# COMMAND ----------

runs = mlflow.search_runs(
    [experiment_id],
    filter_string="attributes.status = 'FINISHED' and tags.`sparkles.model.scores_images` = 'true'",
    order_by=["attributes.start_time ASC"],
)
columns = ["tags.mlflow.runName", "params.regParam", "params.elasticNetParam"]
metrics = ["metrics.accuracy", "metrics.f1", "metrics.auc"]
table = runs[["run_id", *columns, *metrics]].rename(columns=lambda c: c.split(".")[-1])
print(table.to_string(index=False))

# COMMAND ----------

figure = Figure(figsize=(7, 3.5))
axes = figure.subplots()
for name in ("accuracy", "f1", "auc"):
    axes.plot(range(len(table)), table[name], marker="o", label=name)
axes.set_xticks(range(len(table)), table["runName"], rotation=45, ha="right")
axes.set(ylabel="test metric", title="Test metrics across runs")
axes.legend()
figure.tight_layout()
figure.savefig(output / "metrics_across_runs.png", dpi=100)

# COMMAND ----------

# MAGIC %md ## Inside the latest search

# COMMAND ----------

searches = mlflow.search_runs(
    [experiment_id],
    filter_string="attributes.run_name LIKE 'tune-%' and attributes.status = 'FINISHED'",
    order_by=["attributes.start_time DESC"],
    max_results=1,
)
if len(searches):
    parent = searches.iloc[0]
    trials = mlflow.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'"
    )
    metric = parent["params.tune_metric"]
    trials = trials.sort_values(f"metrics.val_{metric}", ascending=False)
    print(trials[["tags.mlflow.runName", "params.regParam", "params.elasticNetParam",
                  f"metrics.val_{metric}"]].to_string(index=False))  # fmt: skip
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    points = axes.scatter(
        trials["params.regParam"].astype(float),
        trials[f"metrics.val_{metric}"],
        c=trials["params.elasticNetParam"].astype(float),
        vmin=0,
        vmax=1,
    )
    axes.set_xscale("log")
    axes.set(xlabel="regParam", ylabel=f"val_{metric}", title=f"{parent['tags.mlflow.runName']}")
    figure.colorbar(points, ax=axes, label="elasticNetParam")
    figure.tight_layout()
    figure.savefig(output / "search.png", dpi=100)
else:
    print("no finished search yet: run `sparkles tune`")
