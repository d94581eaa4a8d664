# Databricks notebook source
# MAGIC %md
# MAGIC # Comparing runs
# MAGIC
# MAGIC Loads the experiment's runs with `mlflow.search_runs`, tabulates accuracy, F1 and AUC of
# MAGIC every trained model, and plots them; then looks inside the latest search: the validation
# MAGIC metric of each trial against its parameters (regParam and elasticNetParam, or the
# MAGIC perceptron's maxIter, stepSize and layers), drawn by `sparkles.plots` like the search's
# MAGIC own `tuning/search.png`.

# COMMAND ----------

import os
import shlex
from pathlib import Path

import mlflow

from sparkles import plots, tracking
from sparkles.config import load_profile
from sparkles.model import classifiers
from sparkles.train.tune import Search, Trial

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
columns = [
    "tags.mlflow.runName",
    "params.classifier",
    "params.regParam",
    "params.elasticNetParam",
    "params.layers",
]
columns = [c for c in columns if c in runs]
metrics = ["metrics.accuracy", "metrics.f1", "metrics.auc"]
table = runs[["run_id", *columns, *metrics]].rename(columns=lambda c: c.split(".")[-1])
print(table.to_string(index=False))

# COMMAND ----------

plots.plot_metrics_across_runs(table, output / "metrics_across_runs.png")

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
    classifier = parent.get("params.classifier")
    classifier = classifier if isinstance(classifier, str) else "logistic"  # runs before the MLP
    kind = classifiers.KINDS[classifier]
    names = [n for n in kind.default_params(profile.train) if f"params.{n}" in trials]
    trials = trials.sort_values(f"metrics.val_{metric}", ascending=False)
    shown = ["tags.mlflow.runName", *(f"params.{n}" for n in names), f"metrics.val_{metric}"]
    print(trials[shown].to_string(index=False))
    found = Search(metric)
    for number, (_, row) in enumerate(trials.iterrows(), start=1):
        params = kind.parse_logged({n: row[f"params.{n}"] for n in names})
        found.trials.append(
            Trial(number, params, {f"val_{metric}": row[f"metrics.val_{metric}"]}, row["run_id"])
        )
    plots.plot_search(found, kind.search_axes, output / "search.png")
else:
    print("no finished search yet: run `sparkles tune`")
