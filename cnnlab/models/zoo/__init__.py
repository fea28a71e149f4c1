"""The model zoo: well-known CIFAR-sized architectures, each registered by name.

Every model takes 1- or 3-channel input, any class count and small images (28x28, 32x32).
Residual blocks are named module classes (`BasicBlock`, `Bottleneck`, `InvertedResidual`)
with a class attribute `residual = True`, so analyses can find where a block input is added
back to its output.
"""
