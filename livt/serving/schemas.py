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
        description="the prior the probabilities are for: the model's own mode, balanced, train, "
        "estimated, custom"
    )
    prior_note: str | None = Field(None, description="why the prior differs from the one asked for")
    predictions: list[ImagePrediction] = Field(description="one entry per image, in request order")
    timing: Timing


class ModelInfo(BaseModel):
    name: str
    version: str
    sha256: str
    platform: str
    classes: list[str]
    prior: dict[str, Any]
    calibration: dict[str, Any] | None = Field(description="the calibrator folded into the artifact")
    metrics: dict[str, Any] | None = None
    metadata: dict[str, Any] = Field(description="the artifact's whole livt metadata")
    priors: list[str] = Field(description="the prior names a request may give (or one number per class)")
    balanced_logits: bool = Field(description="whether a prior other than the model's own can apply")
    engine: dict[str, str] = Field(description="the engine and precision serving, their file and why")


class PriorEstimateResponse(BaseModel):
    classes: list[str]
    estimate: list[float] | None = Field(description="the EM estimate of the traffic's label prior")
    std: list[float] | None = Field(
        description="bootstrap standard deviation of each class's frequency (null below two images)"
    )
    images: int = Field(description="images the estimate rests on (at most window)")
    seen: int = Field(description="images the model has seen since the server started")
    window: int
    min_images: int = Field(description="fewest images before requests for 'estimated' get it")
    ready: bool = Field(description="whether 'estimated' is applied (else balanced is, with a note)")
    distance_to_train: float | None = Field(description="total variation distance to the training prior")
    distance_to_balanced: float | None = Field(description="total variation distance to the uniform prior")
    train: list[float] = Field(description="the training prior")
    updated_at: str | None = Field(description="when the estimate was made (UTC, ISO 8601)")


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
    parameters: dict[str, str] | None = Field(
        None, description="the engine and precision that serve, the file they run and why they were chosen"
    )


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
