"""Readers for on-disk data set formats: IDX (MNIST family), CIFAR pickles, list files, image folders.

Each reader turns files into arrays or ``(path, label)`` samples; the data set builders in
``livt.data.datasets`` decide splits and subsampling.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "LIVT_DATA_ROOT"


class DatasetNotFoundError(FileNotFoundError):
    """The files of a data set are not where it was looked for."""


def given_root(data_root: str | Path | None) -> tuple[Path, str] | None:
    """The root the caller named, ``data_root`` or else ``$LIVT_DATA_ROOT``, and which one it is.

    A named root is the only place a data set is looked for: one that does not hold the data is an
    error, never a silent fall back to another copy. None when neither is set.
    """
    if data_root:
        return Path(data_root), "data_root"
    env = os.environ.get(DATA_ROOT_ENV)
    return (Path(env), f"${DATA_ROOT_ENV}") if env else None


def missing(
    what: str, searched: list[Path], hint: str, given: tuple[Path, str] | None = None
) -> DatasetNotFoundError:
    """A one-line ``DatasetNotFoundError`` naming the root ``given`` (see ``given_root``), every place
    searched and how to get the data."""
    where = f" in {given[1]} {given[0]}" if given else ""
    places = ", ".join(str(p) for p in searched) or "nowhere: pass data_root"
    return DatasetNotFoundError(
        f"{what} not found{where} (searched {places})" + (f"; {hint}" if hint else "")
    )
