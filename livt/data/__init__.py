"""Long-tailed image data sets, long-tail profiles and transforms (see docs/architecture.md)."""

from livt.data.base import ArrayDataset, DatasetInfo, FileDataset, LTDataset
from livt.data.datasets import (
    build_dataset,
    dataset_options,
    list_datasets,
    register_dataset,
)
from livt.data.formats import DatasetNotFoundError
from livt.data.longtail import class_groups, longtail_counts, longtail_indices
from livt.data.transforms import (
    build_eval_transform,
    build_mixup,
    build_train_transform,
    eval_preprocess_config,
)

__all__ = [
    "ArrayDataset",
    "DatasetInfo",
    "DatasetNotFoundError",
    "FileDataset",
    "LTDataset",
    "build_dataset",
    "build_eval_transform",
    "build_mixup",
    "build_train_transform",
    "class_groups",
    "dataset_options",
    "eval_preprocess_config",
    "list_datasets",
    "longtail_counts",
    "longtail_indices",
    "register_dataset",
]
