"""The serving tests' tiny real artifact (the inference layer is what the server runs)."""

from ..serving.conftest import (  # noqa: F401  (fixtures and the artifact's constants)
    CLASS_COUNTS,
    CLASSES,
    LOSS,
    PREPROCESS,
    TAU,
    TEMPERATURE,
    artifact,
    batch_one_artifact,
    build_tiny_artifact,
    image_bytes,
    nan_artifact,
)
