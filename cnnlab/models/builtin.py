"""Imports every module that registers models. A new model family adds its module here."""

import cnnlab.models.classic  # noqa: F401  mlp, lenet5, convnet
import cnnlab.models.zoo.densenet  # noqa: F401  densenet_bc_100
import cnnlab.models.zoo.fastnet  # noqa: F401  fastnet
import cnnlab.models.zoo.mobile  # noqa: F401  mobilenet_v2, shufflenet_v2, efficientnet_b0
import cnnlab.models.zoo.resnet  # noqa: F401  resnet9/20/32/56, resnet18/34/50, preact, se_resnet*
import cnnlab.models.zoo.vgg  # noqa: F401  vgg11_bn, vgg16_bn
