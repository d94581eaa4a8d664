"""Kept for models logged before the subpackages: their saved featurizer stage names its class
``sparkles.featurizer.DeepImageFeaturizer``, which pyspark imports by that path to load it."""

from sparkles.cnn.featurizer import DeepImageFeaturizer

__all__ = ["DeepImageFeaturizer"]
