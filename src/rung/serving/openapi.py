"""The gateway's OpenAPI 3.1 document (``GET /openapi.json``).

Written out rather than generated: the routes are few and stable, and the
request schemas here are what property-based fuzzing (schemathesis) uses
to generate valid and invalid bodies. It covers the Open Inference Protocol
v2 (JSON and Triton's binary tensor data extension, requested outputs),
Triton's repository and statistics extensions, KServe v1, MLflow scoring
and rung's control API.
"""

from __future__ import annotations

from typing import Any

from rung.version import __version__

__all__ = ["document"]

ERROR = {
    "description": "Rejected: the message names the field",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}

DATATYPES = ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64",
             "BF16", "BYTES"]
BINARY_SIZE = {"type": "integer", "minimum": 0, "description": "Binary tensor data extension: the tensor's byte count in the "
               "binary part (elements little endian, row-major; a BYTES element is a 4-byte length, then its bytes)"}

TENSOR = {
    "type": "object",
    "description": "An input tensor: its elements in 'data', or (binary extension) in the binary part after the JSON, "
                   "sized by parameters.binary_data_size; never both",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": DATATYPES},
        "data": {"type": "array"},
        "parameters": {"type": "object", "properties": {"binary_data_size": BINARY_SIZE}},
    },
}

OUTPUT_TENSOR = TENSOR | {
    "description": "An output tensor: 'data' in JSON, or its bytes after the JSON header (parameters.binary_data_size)",
}

REQUESTED_OUTPUT = {
    "type": "object",
    "required": ["name"],
    "description": "An output to answer (none listed: all of them, predict and, for classifiers, proba), in this order",
    "properties": {
        "name": {"type": "string", "description": "predict or proba; another name is a 422 naming outputs[i].name"},
        "parameters": {"type": "object", "properties": {
            "binary_data": {"type": "boolean", "description": "answer this output as binary tensor data"}}},
    },
}

DURATION = {"type": "object", "required": ["count", "ns"],
            "properties": {"count": {"type": "integer", "minimum": 0}, "ns": {"type": "integer", "minimum": 0}}}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}, "field": {"type": "string"}}},
    "InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "properties": {
                "binary_data_output": {"type": "boolean",
                                       "description": "answer every output not asked otherwise as binary tensor data"}}},
            "inputs": {"type": "array", "items": TENSOR},
            "outputs": {"type": "array", "items": REQUESTED_OUTPUT},
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
            "outputs": {"type": "array", "items": OUTPUT_TENSOR},
        },
    },
    "KServeRequest": {
        "type": "object",
        "description": "KServe v1: exactly one of instances (records: objects of column values, or lists in signature "
                       "order) or inputs (records, or an object of columns)",
        "properties": {"instances": {"type": "array"}, "inputs": {}},
    },
    "KServeResponse": {"type": "object", "required": ["predictions"], "properties": {"predictions": {"type": "array"}}},
    "ModelReady": {"type": "object", "required": ["name", "ready"],
                   "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}},
    "RepositoryIndexRequest": {"type": "object", "properties": {
        "ready": {"type": "boolean", "description": "only the versions that are READY"}}},
    "RepositoryIndex": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name", "version", "state", "reason"],
            "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                           "state": {"enum": ["READY", "UNAVAILABLE", "UNLOADED"]}, "reason": {"type": "string"}},
        },
    },
    "RepositoryLoad": {"type": "object", "properties": {"parameters": {
        "type": "object", "description": "Triton's load parameters; 'config' and 'file:...' are refused (rung loads registered versions)"}}},
    "Loaded": {"type": "object", "required": ["name", "loaded"],
               "properties": {"name": {"type": "string"}, "loaded": {"type": "boolean"}}},
    "Unloaded": {"type": "object", "required": ["name", "unloaded"],
                 "properties": {"name": {"type": "string"}, "unloaded": {"type": "boolean"}}},
    "Statistics": {
        "type": "object",
        "required": ["model_stats"],
        "properties": {"model_stats": {"type": "array", "items": {
            "type": "object",
            "required": ["name", "version", "last_inference", "inference_count", "execution_count", "inference_stats",
                         "batch_stats"],
            "properties": {
                "name": {"type": "string"}, "version": {"type": "string"},
                "last_inference": {"type": "integer", "description": "milliseconds since the epoch; 0: never"},
                "inference_count": {"type": "integer"}, "execution_count": {"type": "integer"},
                "inference_stats": {"type": "object", "properties": {
                    k: DURATION for k in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")}},
                "batch_stats": {"type": "array", "items": {"type": "object", "properties": {
                    "batch_size": {"type": "integer"}, "compute_input": DURATION, "compute_infer": DURATION,
                    "compute_output": DURATION}}},
            },
        }}},
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
HEADER_LENGTH = {"name": "Inference-Header-Content-Length", "in": "header", "required": False,
                 "schema": {"type": "integer", "minimum": 0},
                 "description": "Binary tensor data extension: the body's first N bytes are the JSON request, the rest "
                                "the inputs' binary data; the body may then have any content type"}
BINARY_BODY = {"type": "string", "format": "binary",
               "description": "With Inference-Header-Content-Length: N, the JSON InferenceRequest (N bytes), then the "
                              "binary data of each input that gives parameters.binary_data_size, in order"}


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


def _model(summary: str, params: list[dict[str, Any]], schema: str | None = None) -> dict[str, Any]:
    """A model's metadata or readiness: also 503, for a model or version its table names but that could not load."""
    op = _get(summary, params, schema)
    op["responses"]["503"] = ERROR
    return op


def _predict(summary: str, params: list[dict[str, Any]], request: str, response: str, *, csv: bool = False,
             binary: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}}
    ok = _ok(response)
    if csv:  # MLflow scoring also reads a CSV table, as `mlflow models serve` does
        content["text/csv"] = {"schema": {"type": "string", "description": "UTF-8, a header row naming the columns, one row per prediction"}}
    if binary:  # OIP: Triton's binary tensor data extension, both ways
        content["application/octet-stream"] = {"schema": BINARY_BODY}
        params = [*params, HEADER_LENGTH]
        ok["200"]["content"]["application/octet-stream"] = {"schema": {
            "type": "string", "format": "binary", "description": "When an output is asked for as binary: the JSON "
            "InferenceResponse (Inference-Header-Content-Length bytes), then each binary output's data, in order"}}
        ok["200"]["headers"] = {"Inference-Header-Content-Length": {
            "description": "The JSON header's length, when binary outputs follow it", "schema": {"type": "integer"}}}
    return {
        "summary": summary,
        "parameters": [*params, KEY, REQUEST_ID],
        "requestBody": {"required": True, "content": content},
        "responses": {**ok, **{code: ERROR for code in ("400", "404", "413", "415", "422", "503")}},
    }


def _repository(summary: str, body: str, answer: str) -> dict[str, Any]:
    """Triton's repository load / unload of a model (deployer role): what this gateway has loaded, never the routing."""
    return {"summary": f"{summary} (deployer role)", "security": [{"token": []}], "parameters": [NAME],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}}},
            "responses": {**_ok(answer), **{code: ERROR for code in ("400", "401", "403", "404", "413", "415", "422", "503")}}}


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
        "/v2/models/{name}/ready": {"get": _model("Model readiness", [NAME], "ModelReady")},
        "/v2/models/{name}/infer": {"post": _predict("Inference (routed)", [NAME], "InferenceRequest", "InferenceResponse",
                                                     binary=True)},
        "/v2/models/{name}/versions/{version}": {"get": _model("Model version metadata", [NAME, VERSION])},
        "/v2/models/{name}/versions/{version}/ready": {"get": _model("Model version readiness", [NAME, VERSION], "ModelReady")},
        "/v2/models/{name}/versions/{version}/infer": {
            "post": _predict("Inference on one version (pinned)", [NAME, VERSION], "InferenceRequest", "InferenceResponse",
                             binary=True)
        },
        "/v2/repository/index": {"post": {
            "summary": "Every version the routing tables name, and its state",
            "requestBody": {"required": False, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RepositoryIndexRequest"}}}},
            "responses": {**_ok("RepositoryIndex"), **{code: ERROR for code in ("400", "401", "403", "413", "415", "422")}},
        }},
        "/v2/repository/models/{name}/load": {"post": _repository("Load a model's routed versions here", "RepositoryLoad", "Loaded")},
        "/v2/repository/models/{name}/unload": {"post": _repository("Unload a model here (its routing table is kept)",
                                                                    "RepositoryLoad", "Unloaded")},
        "/v2/models/stats": {"get": _get("Statistics of every version this gateway loaded", schema="Statistics")},
        "/v2/models/{name}/stats": {"get": _get("Statistics of a model's versions", [NAME], "Statistics")},
        "/v2/models/{name}/versions/{version}/stats": {"get": _get("Statistics of one version", [NAME, VERSION], "Statistics")},
        "/v1/models/{name}:predict": {"post": _predict("KServe v1 prediction (routed)", [NAME], "KServeRequest", "KServeResponse")},
        "/v1/models/{name}": {"get": _model("KServe v1 model readiness", [NAME], "ModelReady")},
        "/": {"get": {"summary": "KServe v1 liveness", "responses": {"200": {"description": "OK", "content": {"application/json": {
            "schema": {"type": "object", "properties": {"status": {"const": "alive"}}}}}}}}},
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
