"""Which task a profile or a logged model has: decided here once, asked everywhere else.

A profile picks its task by ``data.multi_label_policy``; a logged model says it in
``classifier.json`` (``model.answers.task_of_numbers``, where older models default). A new task
is a ``tasks.base.Task`` subclass given to ``register`` (with its ``Answer`` in
``model.answers.ANSWERS``); ``tests/tasks/test_a_third_task.py`` registers one.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from pyspark.ml import PipelineModel

from sparkles.config import Profile
from sparkles.errors import ConfigError
from sparkles.model import classifiers
from sparkles.model.answers import task_of_numbers
from sparkles.names import CLASSIFIER_FILE, SERVING_DATA
from sparkles.tasks.base import Task
from sparkles.tasks.multi_label import MultiLabel
from sparkles.tasks.single_label import SingleLabel

TASKS: dict[str, Task] = {task.name: task for task in (SingleLabel(), MultiLabel())}


def register(task: Task) -> Task:
    """Make ``task`` the one its policies choose and its name loads (replacing any before)."""
    TASKS[task.name] = task
    return task


def unregister(name: str) -> None:
    TASKS.pop(name, None)


def task_for(profile: Profile) -> Task:
    """The task the profile's ``data.multi_label_policy`` chooses: decided once, here."""
    policy = profile.data.multi_label_policy
    chosen = [task for task in TASKS.values() if policy in task.policies]
    if not chosen:
        raise ConfigError(f"key 'data.multi_label_policy': no task takes {policy!r}")
    return chosen[-1]  # the latest registered


def task_named(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"a model of task {name!r}, which this release does not know")
    return TASKS[name]


def check_profile(profile: Profile) -> Profile:
    """What a profile's YAML schema cannot know, checked before Spark starts (the CLI) or a
    command runs (a notebook's profile): its classifier kind's sections
    (``classifiers.check_profile``), and that the metrics a search and the registry select on
    are ones its task logs."""
    classifiers.check_profile(profile)
    task = task_for(profile)
    for section in ("tune", "registry"):
        metric = getattr(profile, section).metric
        if metric not in task.selectable:
            raise ConfigError(
                f"key '{section}.metric': {metric!r} is not logged by a {task.name} model "
                f"(data.multi_label_policy {profile.data.multi_label_policy!r}; one of "
                f"{', '.join(task.selectable)})"
            )
    return profile


def load_logged(model_uri: str) -> tuple[PipelineModel, Task]:
    """A logged model's Spark flavour and the task its classifier.json says (models from before
    the one-model layout, without one, are single-label)."""
    folder = Path(mlflow.artifacts.download_artifacts(model_uri))
    numbers = folder / SERVING_DATA / CLASSIFIER_FILE
    classifier = json.loads(numbers.read_text()) if numbers.exists() else {}
    return mlflow.spark.load_model(str(folder)), task_named(task_of_numbers(classifier))
