"""Long-tailed image data sets, long-tail profiles and transforms (see docs/architecture.md).

The names below are imported on first use, so ``livt.data.longtail`` (numpy only: the long-tail
profiles) loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ArrayDataset": "livt.data.base",
    "DatasetInfo": "livt.data.base",
    "FileDataset": "livt.data.base",
    "LTDataset": "livt.data.base",
    "build_dataset": "livt.data.datasets",
    "dataset_options": "livt.data.datasets",
    "infer_options": "livt.data.datasets",
    "list_datasets": "livt.data.datasets",
    "register_dataset": "livt.data.datasets",
    "DatasetNotFoundError": "livt.data.formats",
    "longtail_counts": "livt.data.longtail",
    "longtail_indices": "livt.data.longtail",
    "build_eval_transform": "livt.data.transforms",
    "build_mixup": "livt.data.transforms",
    "build_train_transform": "livt.data.transforms",
    "eval_preprocess_config": "livt.data.transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
