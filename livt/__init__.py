"""livt: long-tailed image classification with Vision Transformers (LiVT), from data to service."""

__version__ = "0.1.0"
