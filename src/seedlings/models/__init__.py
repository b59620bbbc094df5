"""Backbones: the only place that knows architectures. Everything else calls create_model()."""

from seedlings.models.registry import BACKBONES, Backbone, create_model, describe_models, resolve_name

__all__ = ["BACKBONES", "Backbone", "create_model", "describe_models", "resolve_name"]
