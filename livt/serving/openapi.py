"""The OpenAPI document: FastAPI's, with the request bodies and parameters the routes read themselves.

The routes parse their bodies by hand (three body types on one route, binary tensor data), so
FastAPI cannot see them; this module adds them from the same per-app models that validate them
(``livt.serving.inputs``), limits included. The document is built on first use, after the model
has loaded, because the prior's length and the input shape come from the model.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from livt.serving.inputs import HEADER_LENGTH, RequestModels

_BINARY = {"type": "string", "format": "binary"}
_REF = "#/components/schemas/{model}"
PREDICT_PATH = "/v1/predict"
INFER_PATHS = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe the hand-parsed request bodies too."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        state = app.state.serving
        if state is None:  # not started: no model, so no limits to state yet
            return spec
        names = {"name": state.settings.model_name, "version": state.model.info.version}
        _describe_requests(spec, state.requests, names)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _describe_requests(spec: dict[str, Any], requests: RequestModels, names: dict[str, str]) -> None:
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    options = _schema(requests.predict_options, components)["properties"]
    limit = requests.limits.max_images
    predict = spec["paths"][PREDICT_PATH]["post"]
    predict["parameters"] = [
        {
            "name": "top_k",
            "in": "query",
            "required": False,
            "description": "how many classes to return per image (with any body; not also in the body)",
            "schema": options["top_k"],
        },
        {
            "name": "prior",
            "in": "query",
            "required": False,
            "description": "model | balanced | train | a JSON list of one non-negative number per class "
            "(with any body; not also in the body)",
            "schema": {"type": "string", "minLength": 1},
        },
    ]
    predict["requestBody"] = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "additionalProperties": False,
                    "properties": {
                        "files": {"type": "array", "items": _BINARY, "minItems": 1, "maxItems": limit},
                        "top_k": options["top_k"],
                        "prior": {"type": "string", "minLength": 1, "description": "as the query parameter"},
                    },
                }
            },
            "application/json": {"schema": {"$ref": _ref(requests.predict_json, components)}},
            "image/*": {"schema": _BINARY},
            "application/octet-stream": {"schema": _BINARY},
        },
    }
    # The v2 routes serve one model: say which name and version, so a client (or a fuzzer) can know.
    for path, methods in spec["paths"].items():
        for operation in methods.values() if path.startswith("/v2/models/") else ():
            for param in operation.get("parameters", ()):
                if param["in"] == "path" and param["name"] in names:
                    param["schema"] = {"type": "string", "enum": [names[param["name"]]]}
    for path in INFER_PATHS:
        infer = spec["paths"][path]["post"]
        infer.setdefault("parameters", []).append(
            {
                "name": HEADER_LENGTH,
                "in": "header",
                "required": False,
                "description": "binary tensor data: the length of the JSON header that starts the body",
                "schema": {"type": "integer", "minimum": 1},
            }
        )
        infer["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": _ref(requests.infer, components)}},
                "application/octet-stream": {
                    "schema": _BINARY,
                    "description": f"the JSON header ({HEADER_LENGTH} bytes), then the binary tensors",
                },
            },
        }


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    """``model``'s JSON schema, its nested models moved into the document's components."""
    schema = model.model_json_schema(ref_template=_REF)
    components.update(schema.pop("$defs", {}))
    return schema


def _ref(model: type[BaseModel], components: dict[str, Any]) -> str:
    components[model.__name__] = _schema(model, components)
    return _REF.format(model=model.__name__)
