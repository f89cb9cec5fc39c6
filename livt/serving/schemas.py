"""Request and response models of the API (they also make the OpenAPI page at /docs)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# --- /v1 (the request models are built per app by livt.serving.inputs) ---------------------------


class ClassScore(BaseModel):
    label: str
    index: int
    probability: float


class ImagePrediction(BaseModel):
    top_k: list[ClassScore]


class ModelRef(BaseModel):
    name: str = Field(description="the served model name")
    version: str = Field(description="first 12 hex digits of the artifact's sha256")
    architecture: str = Field(description="the artifact's model_name")


class Timing(BaseModel):
    queue_ms: float = Field(description="waiting for a batch")
    inference_ms: float = Field(description="the model call of that batch")
    total_ms: float = Field(description="the whole request, decoding included")
    batch_size: int = Field(description="images in the model call this request joined")


class PredictResponse(BaseModel):
    model: ModelRef
    prior: str = Field(
        description="the prior the probabilities are for: model's own mode, balanced, train, custom"
    )
    predictions: list[ImagePrediction] = Field(description="one entry per image, in request order")
    timing: Timing


class ModelInfo(BaseModel):
    name: str
    version: str
    sha256: str
    platform: str
    classes: list[str]
    prior: dict[str, Any]
    temperature: float
    metrics: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(description="the artifact's whole livt metadata")


# --- Open Inference Protocol v2 ------------------------------------------------------------------


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class Liveness(BaseModel):
    live: bool


class Readiness(BaseModel):
    ready: bool


class ModelReadiness(BaseModel):
    name: str
    ready: bool


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[InferOutput]
