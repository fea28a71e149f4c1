"""Models: the registry, the spec grammar and the built-in models."""

from cnnlab.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
