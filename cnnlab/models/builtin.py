"""Imports every module that registers models. A new model family adds its module here."""

import cnnlab.models.classic  # noqa: F401  mlp, lenet5, convnet
