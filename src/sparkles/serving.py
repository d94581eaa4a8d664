"""Kept for models logged before the subpackages: their ``python_function`` flavour names
``loader_module: sparkles.serving``, and the two-model layout's ``serving`` pyfunc was pickled
as ``sparkles.serving.ImageScoringModel``."""

from sparkles.model.serving import ImageScoringModel, _load_pyfunc

__all__ = ["ImageScoringModel", "_load_pyfunc"]
