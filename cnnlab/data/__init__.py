"""Data: datasets in their official formats, seeded splits, batch loading and augmentation."""

from cnnlab.data.datasets import DATASETS, Dataset, Split, load_dataset

__all__ = ["DATASETS", "Dataset", "Split", "load_dataset"]
