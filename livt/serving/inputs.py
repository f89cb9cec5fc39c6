"""Every value a client sends is read here, and only here, through pydantic models with strict types.

Issue 10 found the class of bug: each route parsed its own values (``text.split(",")[1]``,
``str.isdigit()``, ``np.asarray(data, float32)``, ``bool(flag)``), and each ad-hoc parse had its own
hole (IndexError, superscript digits, OverflowError, the string ``"false"`` read as true). Here a
value is validated by a model before any code uses it, so a bad one is a 400 that names it.

The models are built per app from ``RequestLimits`` (the settings' counts and the model's classes
and input shape), and ``livt.serving.openapi`` documents the same models: the schema states the
limits the server enforces. A JSON body is first checked to hold no more values than a valid
request could (one comma scan), so no body buys more parsing than the largest valid one.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError
from pydantic_core import PydanticCustomError, from_json
from starlette.requests import Request
from typing_extensions import TypeAliasType

from livt.artifact import INPUT_NAME, OUTPUT_NAMES
from livt.prior import REQUEST_PRIORS
from livt.serving.errors import TOO_MANY, ServingError

HEADER_LENGTH = "Inference-Header-Content-Length"
FLOAT32_MAX = float(np.finfo(np.float32).max)
_DIGITS = re.compile(r"[0-9]{1,15}")
# Commas a JSON body may hold beyond its values: the structure around them (a valid body needs few).
_JSON_COMMA_SLACK = 1024
# base64 is decoded in pieces of this many characters, so a large one lets other threads run between.
_BASE64_PIECE = 1 << 20
_PRIOR_DOC = (
    "the label prior to predict under: 'model' (the artifact's own), 'balanced', 'train' (training "
    "frequencies), 'estimated' (estimated from the recent traffic, see GET /v1/prior) or one "
    "non-negative number per class (normalised); default: the server's --default-prior"
)
_TOP_K_DOC = "how many classes to return per image"
_OBSERVE_DOC = (
    "count these images in the server's estimate of the traffic's prior (GET /v1/prior); false for "
    "images already sent (another prior or top_k for the same images), which would count twice"
)
_Observe = Annotated[bool, Field(strict=True, description=_OBSERVE_DOC)]


# An FP32 value as JSON: a number (not a string, not a boolean) that float32 holds.
FP32 = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
# A v2 tensor's JSON data: flat, or nested as its shape (the protocol allows both). Each item is
# read as what it is (a list, else a value), so an error names that reading only.
TensorData = TypeAliasType(
    "TensorData",
    "list[Annotated[Annotated[FP32, Tag('value')] | Annotated[TensorData, Tag('list')], Discriminator(_item_kind)]]",
)


@dataclass(frozen=True)
class RequestLimits:
    """What a valid request may hold: from the settings and the served model."""

    max_images: int
    max_top_k: int
    num_classes: int
    input_shape: tuple[int, int, int]  # C, H, W

    @property
    def max_values(self) -> int:
        """Most FP32 values in one v2 input tensor."""
        return self.max_images * math.prod(self.input_shape)


def _at_most(limit: int, what: str) -> AfterValidator:
    def check(items: list) -> list:
        if len(items) > limit:
            raise PydanticCustomError(
                TOO_MANY,
                "{count} {what} in one request; the limit is {limit}",
                {"count": len(items), "what": what, "limit": limit},
            )
        return items

    return AfterValidator(check)


@dataclass
class PredictInput:
    """A validated ``/v1/predict`` request; ``files`` are file bytes, or base64 text still to decode."""

    files: list[bytes | str]
    options: Any  # RequestModels.predict_options: top_k, prior, observe


class RequestModels:
    """The request models of one app, and the functions that read each kind of client value."""

    def __init__(self, limits: RequestLimits):
        self.limits = limits
        prior = _prior_type(limits.num_classes)
        self.predict_options, self.predict_json = _v1_models(limits, prior)
        self.infer, self.infer_parameters, self.requested_output = _v2_models(limits, prior)

    # --- /v1/predict ---------------------------------------------------------------------------

    def options(
        self, query: Iterable[tuple[str, str]], body: Mapping[str, Any] | None = None, where: str = "body"
    ) -> BaseModel:
        """The options from the query string and, for a form or JSON, the body: one may say each."""
        given = text_values(query, "query parameter")
        body = body or {}
        twice = sorted(given.keys() & body.keys())
        if twice:
            raise ServingError(400, f"{twice[0]!r} is given both as a query parameter and in the {where}")
        try:
            return self.predict_options.model_validate({**body, **given})
        except ValidationError as exc:
            err = exc.errors()[0]
            name = str(err["loc"][0]) if err["loc"] else ""
            source = "query parameter" if name in given else where
            if err["type"] == "extra_forbidden":
                raise ServingError(
                    400,
                    f"unknown {source} {name!r}; the options are {list(self.predict_options.model_fields)}",
                ) from exc
            detail = ".".join(str(p) for p in err["loc"])
            raise ServingError(400, f"invalid {source} {detail}: {err['msg']}") from exc

    async def json_predict(self, request: Request) -> PredictInput:
        body = await self.read_json(request, self.limits.max_images)
        parsed = self.predict_json.model_validate_json(body)
        stated = {name: getattr(parsed, name) for name in parsed.model_fields_set - {"images"}}
        options = self.options(request.query_params.multi_items(), stated, "JSON body")
        return PredictInput(list(parsed.images), options)

    # --- /v2 infer -----------------------------------------------------------------------------

    async def infer_request(self, request: Request) -> tuple[BaseModel, bytes]:
        """The v2 request and its binary tensor data (binary tensor data extension), if any."""
        header_length = request.headers.get(HEADER_LENGTH)
        if header_length is None:
            return self.infer.model_validate_json(await self.read_json(request, self.limits.max_values)), b""
        body = await request.body()
        # ASCII digits only: str.isdigit() and int() also take "²" and "١٢", and int() "+5" and " 5".
        n = int(header_length) if _DIGITS.fullmatch(header_length) else 0
        if not 0 < n <= len(body):
            raise ServingError(
                400, f"{HEADER_LENGTH} {header_length[:40]!r} does not fit a body of {len(body)} bytes"
            )
        self._check_json_values(body[:n], self.limits.max_values)
        return self.infer.model_validate_json(body[:n]), body[n:]

    def input_batch(self, req: BaseModel, binary: bytes) -> np.ndarray:
        """The request's input tensor, from JSON ``data`` or the binary tensor data."""
        tensor = req.inputs[0]
        expected = list(self.limits.input_shape)
        if tensor.shape[1:] != expected or tensor.shape[0] < 1:
            raise ServingError(
                400, f"input shape must be [N, {', '.join(map(str, expected))}], got {tensor.shape}"
            )
        if tensor.shape[0] > self.limits.max_images:
            raise ServingError(
                413, f"batch of {tensor.shape[0]} images; the limit is {self.limits.max_images}"
            )
        count = math.prod(tensor.shape)
        size = tensor.parameters.binary_data_size if tensor.parameters else None
        if size is not None:
            if size != len(binary) or size != count * 4:
                raise ServingError(
                    400,
                    f"binary_data_size {size} must equal the {len(binary)} bytes sent and 4 * {count} values",
                )
            values = np.frombuffer(binary, dtype="<f4").astype(np.float32)
            if not np.isfinite(values).all():
                raise ServingError(400, "input contains NaN or infinite values")
        else:
            if binary or tensor.data is None:
                raise ServingError(400, "the input needs 'data', or binary_data_size with binary tensor data")
            try:
                values = np.asarray(tensor.data, dtype=np.float32)
            except ValueError as exc:  # nested lists of uneven lengths
                raise ServingError(400, "input data nests lists of different lengths") from exc
            if values.size != count:
                raise ServingError(400, f"input has {values.size} values; shape {tensor.shape} needs {count}")
        return values.reshape(tensor.shape)

    async def read_json(self, request: Request, max_values: int) -> bytes:
        """A JSON body, refused (413) as it streams in, the moment it holds more values than a valid one.

        Reading all of a 32 MB body before counting cost more than the count: the copy alone took
        0.2 s of the event loop on a busy machine.
        """
        allowed = self._json_value_limit(max_values)
        commas = 0
        chunks = []
        async for chunk in request.stream():
            commas += chunk.count(b",")
            if commas > allowed:
                # The rest of the body is not read: the connection closes rather than drain it.
                raise ServingError(413, _too_many_values(max_values), {"Connection": "close"})
            chunks.append(chunk)
        return b"".join(chunks)

    def _check_json_values(self, body: bytes, max_values: int) -> None:
        if body.count(b",") > self._json_value_limit(max_values):
            raise ServingError(413, _too_many_values(max_values))

    def _json_value_limit(self, max_values: int) -> int:
        # Every value but the last is followed by a comma, and counting them is a scan at memory
        # speed, while parsing a value costs about 0.25 us: 16 M of them stalled the server for 4 s.
        return max_values + self.limits.num_classes + _JSON_COMMA_SLACK


def _prior_type(k: int) -> Any:
    """A request's prior: a name, or one number per class not all zero (what resolve_prior accepts)."""
    finite = Field(strict=True, allow_inf_nan=False)
    Weight = Annotated[float, finite, Field(ge=0)]
    Weights = Annotated[
        list[Weight],
        Field(min_length=k, max_length=k, json_schema_extra={"contains": {"exclusiveMinimum": 0}}),
    ]
    # Discriminated by the value's type, so an error names the one reading that applies.
    return Annotated[
        Annotated[
            Annotated[Literal[REQUEST_PRIORS], Tag("name")] | Annotated[Weights, Tag("values")],
            Discriminator(_prior_kind),
        ]
        | None,
        Field(description=_PRIOR_DOC),
    ]


def _v1_models(limits: RequestLimits, Prior: Any) -> tuple[type[BaseModel], type[BaseModel]]:
    """``/v1/predict``'s options (query, form or JSON) and its JSON body."""
    TopK = Annotated[int, Field(strict=True, ge=1, le=limits.max_top_k, description=_TOP_K_DOC)]

    class PredictOptions(BaseModel):
        """The options of ``POST /v1/predict``: query parameters, form fields or JSON."""

        model_config = ConfigDict(extra="forbid")

        top_k: TopK = 5
        prior: Prior = None
        observe: _Observe = True

    class PredictJSONRequest(PredictOptions):
        """``POST /v1/predict`` with ``Content-Type: application/json``."""

        images: Annotated[
            list[Annotated[str, Field(strict=True)]],
            Field(min_length=1, description="base64-encoded image files (PNG, JPEG, ...), or data URLs"),
            Field(json_schema_extra={"maxItems": limits.max_images}),
            _at_most(limits.max_images, "images"),
        ]

    return PredictOptions, PredictJSONRequest


def _infer_input(limits: RequestLimits) -> type[BaseModel]:
    """The one input tensor of a v2 request, its shape stated in the schema."""
    c, h, w = limits.input_shape

    class InputParameters(BaseModel):
        model_config = ConfigDict(extra="allow")

        binary_data_size: Annotated[int, Field(strict=True, ge=0)] | None = None

    class InferInput(BaseModel):
        model_config = ConfigDict(extra="forbid")

        name: Literal[INPUT_NAME]
        shape: Annotated[
            list[Annotated[int, Field(strict=True)]],
            Field(
                min_length=4,
                max_length=4,
                description=f"[N, {c}, {h}, {w}] with 1 <= N <= {limits.max_images}",
                json_schema_extra={
                    "prefixItems": [
                        {"type": "integer", "minimum": 1, "maximum": limits.max_images},
                        *({"const": d} for d in (c, h, w)),
                    ]
                },
            ),
        ]
        datatype: Literal["FP32"]
        parameters: InputParameters | None = None
        data: (
            Annotated[
                TensorData,
                Field(
                    description="the tensor's N * C * H * W values in row-major order: a flat list, "
                    "or lists nested as the shape"
                ),
                Field(json_schema_extra={"maxItems": limits.max_values}),
            ]
            | None
        ) = None

    return InferInput


def _v2_models(limits: RequestLimits, Prior: Any) -> tuple[type[BaseModel], type[BaseModel], type[BaseModel]]:
    """The v2 infer request, its parameters and one requested output."""
    InferInput = _infer_input(limits)

    class OutputParameters(BaseModel):
        model_config = ConfigDict(extra="allow")

        classification: Annotated[int, Field(strict=True, ge=0)] = 0
        binary_data: Annotated[bool, Field(strict=True)] | None = None

    class RequestedOutput(BaseModel):
        model_config = ConfigDict(extra="forbid")

        name: Literal[OUTPUT_NAMES]
        parameters: OutputParameters | None = None

    class InferParameters(BaseModel):
        model_config = ConfigDict(extra="allow")

        binary_data_output: Annotated[bool, Field(strict=True)] = False
        prior: Prior = None
        observe: _Observe = True

    class InferRequest(BaseModel):
        """An Open Inference Protocol v2 request: one FP32 tensor ``input``."""

        model_config = ConfigDict(extra="forbid")

        id: Annotated[str, Field(strict=True)] | None = None
        parameters: InferParameters | None = Field(
            None,
            description="binary_data_output (bool), and livt's 'prior' and 'observe' (as in /v1/predict)",
        )
        inputs: Annotated[list[InferInput], Field(min_length=1, max_length=1)]
        # Each output once: a name repeated 26,000 times made one request answer 164 MB.
        outputs: (
            Annotated[
                list[RequestedOutput],
                Field(min_length=1, max_length=len(OUTPUT_NAMES)),
                AfterValidator(_each_name_once),
            ]
            | None
        ) = None

    return InferRequest, InferParameters, RequestedOutput


def _each_name_once(outputs: list) -> list:
    names = [out.name for out in outputs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"output {twice[0]!r} is requested more than once")
    return outputs


def _too_many_values(max_values: int) -> str:
    return f"the JSON body holds more values than the limit of {max_values} for one request"


def _item_kind(value: object) -> str:
    return "list" if isinstance(value, list) else "value"


def _prior_kind(value: object) -> str:
    return "values" if isinstance(value, list) else "name"


def text_values(fields: Iterable[tuple[str, str]], where: str) -> dict[str, Any]:
    """Query parameters or form fields as values: JSON where the text is JSON (``5``, ``[1, 2]``), else the text.

    The models then validate them exactly as the same values in a JSON body.
    """
    values: dict[str, Any] = {}
    for name, text in fields:
        if name in values:
            raise ServingError(400, f"{where} {name!r} is given more than once")
        try:
            values[name] = from_json(text)
        except ValueError as exc:
            if text.lstrip().startswith("["):
                raise ServingError(400, f"{where} {name!r} is not a valid JSON list: {exc}") from exc
            values[name] = text
    return values


def decode_base64_image(index: int, text: str) -> bytes:
    """One JSON image: base64, or a data URL as a browser's FileReader writes it (``data:...;base64,...``)."""
    if text.startswith("data:"):
        head, comma, text = text.partition(",")
        if not comma or not head.endswith(";base64"):
            raise ServingError(400, f"images[{index}] is a data URL but not 'data:<type>;base64,<data>'")
    try:
        if len(text) <= _BASE64_PIECE:
            return base64.b64decode(text, validate=True)
        if len(text) % 4:
            raise ValueError("length is not a multiple of 4")
        return b"".join(
            base64.b64decode(text[i : i + _BASE64_PIECE], validate=True)
            for i in range(0, len(text), _BASE64_PIECE)
        )
    except (binascii.Error, ValueError) as exc:
        raise ServingError(400, f"images[{index}] is not valid base64") from exc
