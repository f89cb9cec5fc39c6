"""Readers for on-disk data set formats: IDX (MNIST family), CIFAR pickles, list files, image folders.

Each reader turns files into arrays or ``(path, label)`` samples; the data set builders in
``livt.data.datasets`` decide splits and subsampling.
"""

from __future__ import annotations

from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """The files of a data set are not where it was looked for."""


def missing(what: str, searched: list[Path], hint: str) -> DatasetNotFoundError:
    """A ``DatasetNotFoundError`` that lists every place searched and how to get the data."""
    places = "\n".join(f"  - {p}" for p in searched) or "  (no place to search: pass data_root)"
    return DatasetNotFoundError(f"{what} not found. Searched:\n{places}" + (f"\n{hint}" if hint else ""))
