"""Kept for models logged before the subpackages: their saved quarantine stages name their
classes ``sparkles.pipeline.FillQuarantined`` and ``sparkles.pipeline.MaskQuarantined``."""

from sparkles.model.stages import FillQuarantined, MaskQuarantined

__all__ = ["FillQuarantined", "MaskQuarantined"]
