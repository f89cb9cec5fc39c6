"""Export errors; the CLI maps them to exit codes (``ExportError`` 2, ``VerificationError`` 1)."""

from __future__ import annotations


class ExportError(RuntimeError):
    """An export that cannot start: bad input, unsupported options, a missing backend."""


class VerificationError(ExportError):
    """An exported artifact whose outputs do not match the PyTorch model within tolerance."""
