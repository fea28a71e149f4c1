"""Models: the registry, the spec grammar and the built-in models."""

import cnnlab.models.builtin  # noqa: F401  registers the built-in models (any cnnlab.models import runs this)
from cnnlab.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
