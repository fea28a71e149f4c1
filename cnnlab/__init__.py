"""cnnlab: design, train, measure and cost small convolutional image classifiers."""

__version__ = "0.1.0"
