"""The gateway's OpenAPI 3.1 document (``GET /openapi.json``).

Written out rather than generated: the routes are few and stable, and the
request schemas here are what property-based fuzzing (schemathesis) uses
to generate valid and invalid bodies.
"""

from __future__ import annotations

from typing import Any

from rung.version import __version__

__all__ = ["document"]

ERROR = {
    "description": "Rejected: the message names the field",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}

TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64", "BYTES"]},
        "data": {"type": "array"},
        "parameters": {"type": "object"},
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}, "field": {"type": "string"}}},
    "InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": TENSOR},
            "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        },
    },
    "InferenceResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "outputs": {"type": "array", "items": TENSOR},
        },
    },
    "MlflowRequest": {
        "type": "object",
        "description": "Exactly one of dataframe_split, dataframe_records, instances, inputs",
        "properties": {
            "dataframe_split": {"type": "object", "properties": {"columns": {"type": "array", "items": {"type": "string"}}, "data": {"type": "array", "items": {"type": "array"}}}},
            "dataframe_records": {"type": "array", "items": {"type": "object"}},
            "instances": {"type": "array"},
            "inputs": {},
        },
    },
    "MlflowResponse": {
        "type": "object",
        "required": ["predictions"],
        "properties": {"predictions": {"type": "array"}, "probabilities": {"type": "array"}, "rung": {"type": "object"}},
    },
    "Variant": {
        "type": "object",
        "required": ["version"],
        "properties": {"name": {"type": "string"}, "version": {"type": "integer", "minimum": 1}, "weight": {"type": "number", "minimum": 0}},
    },
    "RoutingUpdate": {
        "type": "object",
        "required": ["variants"],
        "properties": {
            "variants": {"type": "array", "items": {"$ref": "#/components/schemas/Variant"}},
            "shadows": {"type": "array", "items": {"$ref": "#/components/schemas/Variant"}},
            "reason": {"type": "string"},
            "expected_revision": {"type": "integer"},
        },
    },
    "FeedbackItem": {
        "type": "object",
        "required": ["request_id", "value"],
        "properties": {"request_id": {"type": "string"}, "value": {"type": "number"}},
    },
    "Feedback": {
        "oneOf": [
            {"$ref": "#/components/schemas/FeedbackItem"},
            {"type": "object", "required": ["feedback"],
             "properties": {"feedback": {"type": "array", "items": {"$ref": "#/components/schemas/FeedbackItem"}}}},
        ],
    },
    "Deploy": {
        "type": "object",
        "required": ["model", "version"],
        "properties": {
            "model": {"type": "string"}, "version": {"type": "integer", "minimum": 1},
            "strategy": {"enum": ["direct", "canary", "ab", "shadow"]}, "force": {"type": "boolean"}, "reason": {"type": "string"},
        },
    },
    "RoutingTable": {"type": "object", "properties": {"model": {"type": "string"}, "revision": {"type": "integer"}, "variants": {"type": "array"}, "shadows": {"type": "array"}}},
}

NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
KEY = {"name": "X-Rung-Key", "in": "header", "required": False, "schema": {"type": "string"}, "description": "Sticky routing key"}
REQUEST_ID = {"name": "X-Request-Id", "in": "header", "required": False, "schema": {"type": "string"}}


def _ok(schema: str | None = None, text: bool = False) -> dict[str, Any]:
    if text:
        return {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}}
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"} if schema else {"type": "object"}}}
    return {"200": {"description": "OK", "content": content}}


def _get(summary: str, params: list[dict[str, Any]] | None = None, schema: str | None = None, secured: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": params or [], "responses": {**_ok(schema), "404": ERROR}}
    if secured:
        op["security"] = [{"token": []}]
        op["responses"] |= {"401": ERROR, "403": ERROR}
    return op


def _model(summary: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    """A model's metadata or readiness: also 503, for a model or version its table names but that could not load."""
    op = _get(summary, params)
    op["responses"]["503"] = ERROR
    return op


def _predict(summary: str, params: list[dict[str, Any]], request: str, response: str, *, csv: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}}
    if csv:  # MLflow scoring also reads a CSV table, as `mlflow models serve` does
        content["text/csv"] = {"schema": {"type": "string", "description": "UTF-8, a header row naming the columns, one row per prediction"}}
    return {
        "summary": summary,
        "parameters": [*params, KEY, REQUEST_ID],
        "requestBody": {"required": True, "content": content},
        "responses": {**_ok(response), **{code: ERROR for code in ("400", "404", "413", "415", "422", "503")}},
    }


def _action(summary: str) -> dict[str, Any]:
    return {"summary": f"{summary} (deployer role)", "security": [{"token": []}], "parameters": [NAME],
            "responses": {**_ok(), **{code: ERROR for code in ("400", "401", "403", "404", "409")}}}


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    paths: dict[str, Any] = {
        "/v2": {"get": _get("Server metadata")},
        "/v2/health/live": {"get": _get("Liveness")},
        "/v2/health/ready": {"get": {**_get("Readiness"), "responses": {**_ok(), "503": ERROR}}},
        "/v2/models/{name}": {"get": _model("Model metadata", [NAME])},
        "/v2/models/{name}/ready": {"get": _model("Model readiness", [NAME])},
        "/v2/models/{name}/infer": {"post": _predict("Inference (routed)", [NAME], "InferenceRequest", "InferenceResponse")},
        "/v2/models/{name}/versions/{version}": {"get": _model("Model version metadata", [NAME, VERSION])},
        "/v2/models/{name}/versions/{version}/ready": {"get": _model("Model version readiness", [NAME, VERSION])},
        "/v2/models/{name}/versions/{version}/infer": {
            "post": _predict("Inference on one version (pinned)", [NAME, VERSION], "InferenceRequest", "InferenceResponse")
        },
        "/models/{name}/invocations": {"post": _predict("MLflow scoring (routed)", [NAME], "MlflowRequest", "MlflowResponse", csv=True)},
        "/invocations": {"post": _predict("MLflow scoring of the project's model", [], "MlflowRequest", "MlflowResponse",
                                              csv=True)},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": _ok(text=True)}},
        "/api/routes": {"get": _get("Every routing table", secured=True)},
        "/api/routes/{name}": {
            "get": _get("One model's routing table", [NAME], "RoutingTable", secured=True),
            "put": {
                "summary": "Replace a model's routing table (deployer role)",
                "security": [{"token": []}],
                "parameters": [NAME],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RoutingUpdate"}}}},
                "responses": {**_ok("RoutingTable"), **{code: ERROR for code in ("400", "401", "403", "404", "409", "413", "415", "422")}},
            },
        },
        "/v2/feedback": {
            "post": {
                "summary": "Ground truth or reward for earlier requests, by request id (ID#3: row 3 of a multi-row request)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Feedback"}}}},
                "responses": {**_ok(), **{code: ERROR for code in ("400", "401", "403", "409", "413", "415", "422")}},
            },
        },
        "/api/deployments": {
            "get": _get("Rollouts, newest first (optional ?model=NAME)", secured=True),
            "post": {
                "summary": "Deploy a certified version with a strategy (deployer role)",
                "security": [{"token": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Deploy"}}}},
                "responses": {"201": {"description": "the rollout"},
                              **{code: ERROR for code in ("400", "401", "403", "404", "409", "413", "415", "422")}},
            },
        },
        "/api/deployments/{name}/rollback": {"post": _action("Roll back: all traffic to the previous champion")},
        "/api/deployments/{name}/approve": {"post": _action("Approve a rollout waiting for approval")},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "rung gateway", "version": __version__},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
    }
