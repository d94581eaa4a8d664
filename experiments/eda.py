# Databricks notebook source
# MAGIC %md
# MAGIC # Exploratory analysis of the Open Images labels
# MAGIC
# MAGIC The 2019 study's EDA, step by step: how many labels each image carries, which labels are
# MAGIC most frequent, how often the target classes occur (and together), and which labels occur
# MAGIC together (a co-occurrence dendrogram of the top 48 labels), and the images' width ×
# MAGIC height (read from the file headers, as the study's image-dimension check). Every number is
# MAGIC computed with Spark by `sparkles.data.eda`; this notebook only calls it and shows the
# MAGIC results.
# MAGIC
# MAGIC Runs unchanged on Databricks or locally as plain Python (`python experiments/eda.py`).
# MAGIC `SPARKLES_PROFILE` names the profile (default `local`, the bundled sample) and
# MAGIC `SPARKLES_SET` holds space-separated `KEY=VALUE` overrides.

# COMMAND ----------

import os
import shlex
from pathlib import Path

from sparkles.config import load_profile
from sparkles.data import eda
from sparkles.data.sample import ensure_sample
from sparkles.session import build_session

profile = load_profile(
    os.environ.get("SPARKLES_PROFILE", "local"), shlex.split(os.environ.get("SPARKLES_SET", ""))
)
ensure_sample(profile)
spark = build_session(profile)
output = Path(os.environ.get("SPARKLES_NOTEBOOK_OUTPUT", "notebook-output")) / "eda"

# COMMAND ----------

# MAGIC %md ## The numbers

# COMMAND ----------

result = eda.compute(
    spark,
    labels_csv=profile.data.labels_csv,
    classes_csv=profile.data.classes_csv,
    classes=profile.data.classes,
    top_n=profile.eda.top_n,
    top_k=profile.eda.top_k,
    images=profile.data.images,  # width × height from the file headers
    image_glob=profile.data.image_glob,
)
print(eda.markdown(result.summary))

# COMMAND ----------

# MAGIC %md ## Labels per image, top labels, and labels that occur together

# COMMAND ----------

plots = eda.write_report(result, output)
for name, path in plots.items():
    print(f"{name}: {path}")
print("dendrogram order:", ", ".join(eda.dendrogram_leaves(result)))
