"""Service settings: command-line flags and ``LIVT_*`` environment variables, one typed object."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from livt.inference.preprocess import DEFAULT_MAX_PIXELS
from livt.prior import ESTIMATED_PRIOR, REQUEST_PRIORS

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class ServeSettings(BaseSettings):
    """Everything ``livt-serve`` can be told. Each field ``x`` is also read from ``LIVT_X``."""

    model_config = SettingsConfigDict(env_prefix="LIVT_", protected_namespaces=(), extra="forbid")

    model: Path = Field(description="the ONNX artifact (.onnx) or TensorRT engine (.plan + .plan.json)")
    model_name: str = Field("livt", description="the name served under /v2/models/{name}")
    sha256: str | None = Field(
        None, description="expected sha256 of the artifact (else ARTIFACT.sha256 if present)"
    )
    providers: Annotated[list[str] | None, NoDecode] = Field(
        None, description="ONNX Runtime providers in order (default: TensorRT, CUDA, CPU as available)"
    )
    backend: Literal["auto", "ort", "openvino", "tensorrt"] = Field(
        "auto",
        description="inference engine: auto (the fastest accurate one on this host, from the "
        "livt-export benchmark record or a short start-up measurement), ort, openvino or tensorrt",
    )
    precision: Literal["fp32", "bf16", "int8"] | None = Field(
        None, description="fp32, bf16 or int8 (default: auto picks; a forced engine runs fp32)"
    )
    intra_op_threads: int = Field(
        0, ge=0, description="intra-op threads of the engine (ONNX Runtime, OpenVINO; 0 = its default)"
    )
    intra_op_spinning: bool = Field(
        False,
        description="let idle ONNX Runtime threads busy-wait for work: a little lower latency when the "
        "server is idle, less throughput under load (the event loop loses CPU to them)",
    )

    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="log level"
    )
    access_log: bool = Field(
        False, description="log a line per request (off: /metrics counts requests, for less CPU each)"
    )

    max_batch: int = Field(32, ge=1, description="most images in one model call")
    max_delay_ms: float = Field(5.0, ge=0, description="longest a batch waits for more requests")
    max_queue: int = Field(256, ge=1, description="requests waiting for the model before 503")
    timeout_s: float = Field(
        30.0, gt=0, description="deadline for a request: decoding, waiting and inference (else 504)"
    )
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1, description="largest request body (else 413)")
    max_images: int | None = Field(
        None,
        ge=1,
        validate_default=True,
        description="most images in one request (else 413); at most, and by default, max_batch",
    )
    max_image_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=1, description="largest image, width * height (else 413)"
    )
    max_top_k: int = Field(100, ge=1, description="largest top_k a request may ask for")

    api_key: SecretStr | None = Field(None, description="if set, required as Bearer token or X-API-Key")

    default_prior: Literal[REQUEST_PRIORS] = Field(  # type: ignore[valid-type]
        "model", description="the prior of a request that names none ('model': the artifact's own)"
    )
    prior_window: int = Field(
        2000, ge=0, description="recent images whose balanced posteriors estimate the prior (0 = off)"
    )
    prior_min_images: int = Field(
        500, ge=1, description="fewest images in the window before 'estimated' is used (else balanced)"
    )
    prior_interval_s: float = Field(5.0, gt=0, description="seconds between re-estimates of the prior")
    prior_bootstrap: int = Field(20, ge=0, description="bootstrap resamples for the estimate's spread")
    metrics_max_classes: int = Field(
        200, ge=0, description="per-class Prometheus series (prior, predictions) up to this many classes"
    )
    # What a request may cost and who may ask
    max_request_pixels: int = Field(
        64_000_000,
        ge=1,
        description="most pixels in all of a request's images, read from their headers before any is "
        "decoded (else 413)",
    )
    decode_threads: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 2) // 2),
        ge=1,
        description="threads that decode images too large for the event loop (default: half the CPUs)",
    )
    allowed_hosts: Annotated[list[str] | None, NoDecode] = Field(
        None,
        validate_default=True,
        description="Host header names the server answers to, '*' for any (default: the loopback names "
        "when bound to loopback, else any): a page on another site cannot reach it by DNS rebinding",
    )
    require_checksum: bool = Field(
        False, description="refuse to start without a checksum (--sha256 or ARTIFACT.sha256)"
    )
    # What a slow or departing client may hold
    read_timeout_s: float = Field(
        10.0,
        gt=0,
        description="longest a client may take to send a request's headers, and again its body (else 408)",
    )
    graceful_timeout_s: float = Field(
        8.0,
        gt=0,
        description="on SIGTERM, how long requests in flight may finish before they are cancelled "
        "(under Docker's 10 s before SIGKILL)",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="web origins (https://app.example) whose pages may POST to the API from a browser; "
        "other cross-site POSTs are refused (403)",
    )

    @field_validator("port", mode="before")
    @classmethod
    def _not_a_service_link(cls, value: object) -> object:
        # Kubernetes sets LIVT_PORT=tcp://IP:PORT in every pod when a Service is named "livt".
        if isinstance(value, str) and value.startswith("tcp://"):
            raise ValueError(
                f"{value!r} is a Kubernetes service link (a Service named 'livt' sets LIVT_PORT): set "
                "enableServiceLinks: false in the pod spec, or name the Service otherwise"
            )
        return value

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        # Environment variables and the CLI give a comma-separated string.
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("max_images")
    @classmethod
    def _request_fits_one_model_call(cls, value: int | None, info: ValidationInfo) -> int | None:
        # A request's images go to the model together: more than max_batch could never be batched.
        max_batch = info.data.get("max_batch")
        if max_batch is None:  # max_batch itself was invalid and has its own error
            return value
        if value is None:
            return max_batch
        if value > max_batch:
            raise ValueError(
                f"max_images ({value}) must not exceed max_batch ({max_batch}): one request's images "
                "run in a single model call"
            )
        return value

    @model_validator(mode="after")
    def _estimated_prior_needs_a_window(self) -> ServeSettings:
        if self.default_prior == ESTIMATED_PRIOR and self.prior_window == 0:
            raise ValueError("default_prior 'estimated' needs a prior window (prior_window > 0)")
        return self

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        return _comma_list(value)

    @field_validator("allowed_hosts")
    @classmethod
    def _loopback_answers_loopback_names(cls, value: list[str] | None, info: ValidationInfo) -> list[str]:
        if value is not None:
            return [h.lower() for h in value]
        host = info.data.get("host", "")
        if host != "localhost" and not _is_loopback_address(host):
            return ["*"]
        return list(dict.fromkeys([*LOOPBACK_NAMES, host]))

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("api_key")
    @classmethod
    def _key_without_padding(cls, value: SecretStr | None) -> SecretStr | None:
        # Clients strip a token's spaces (and a header value's, by RFC 9110): a padded key never matches.
        if value is not None and value.get_secret_value() != value.get_secret_value().strip():
            raise ValueError("the API key starts or ends with whitespace, which no client can send")
        return value

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        # An origin has no path: "https://app.example/" is the origin browsers send as "https://app.example".
        return _comma_list(value, strip="/")


def _comma_list(value: object, strip: str = "") -> object:
    """A flag's or variable's "a, b, c" as ``["a", "b", "c"]``, lower-cased; a list passes through."""
    if isinstance(value, str):
        return [item.strip().rstrip(strip).lower() for item in value.split(",") if item.strip()]
    return value


def _is_loopback_address(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
