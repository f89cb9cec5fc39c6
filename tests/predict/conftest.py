"""The serving tests' tiny real artifact and live server, shared (the predictor is the server's model layer)."""

from ..serving.conftest import artifact, serve  # noqa: F401  (fixtures)
