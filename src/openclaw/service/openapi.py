"""The OpenAPI 3.1 document of the Rating API, written by hand (the app is plain Starlette).

The tests compare its paths with the app's routes and check responses against it, so it
cannot drift from what the service does.
"""

from __future__ import annotations

from typing import Any

from openclaw import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("Error"), "Malformed request (bad JSON)."),
    "413": _json(_ref("Error"), "Body (or batch) too large."),
    "422": _json(_ref("Error"), "A field has the wrong type or an absurd value."),
    "503": _json(_ref("Error"), "The bucket store failed."),
}


def _optional_strings(*names: str) -> dict[str, Any]:
    """An optional JSON object body of the named string fields, and nothing else."""
    properties = {name: {"type": "string"} for name in names}
    schema = {"type": "object", "additionalProperties": False, "properties": properties}
    return {"required": False, "content": {"application/json": {"schema": schema}}}


_ADMIN_ERRORS = {
    "400": _json(_ref("Error"), "Malformed request (bad JSON)."),
    "401": _json(_ref("Error"), "Missing or wrong bearer token."),
    "403": _json(_ref("Error"), "Admin endpoints are disabled."),
    "409": _json(
        _ref("Error"),
        "Refused: no canary in policy_mode static, one is running, "
        "none is running, or the version does not load (the reason says which).",
    ),
    "413": _json(_ref("Error"), "Body too large."),
    "422": _json(_ref("Error"), "A field has the wrong type."),
}

_RATE_HEADERS = {
    "RateLimit-Policy": {
        "description": "draft-ietf-httpapi-ratelimit-headers-10 quota policies.",
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": "draft-ietf-httpapi-ratelimit-headers-10 service limit.",
        "schema": {"type": "string"},
    },
}

_QUERY_PARAMS = [
    {
        "name": "client_id",
        "in": "query",
        "required": False,
        "description": "The client; else the X-Client-ID header; else the remote address.",
        "schema": {"type": "string", "minLength": 1},
    },
    {
        "name": "cost",
        "in": "query",
        "required": False,
        "schema": {"type": "number", "minimum": 0, "default": 1},
    },
    {"name": "route", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "X-Client-ID", "in": "header", "required": False, "schema": {"type": "string"}},
]

_RATE_RESPONSES = {
    "200": {**_json(_ref("Decision"), "The decision."), "headers": _RATE_HEADERS},
    "429": {
        **_json(_ref("Decision"), "Denied, in enforce mode (also carries error and reason)."),
        "headers": {
            **_RATE_HEADERS,
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}},
        },
    },
    **_ERRORS,
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "reason"],
        "properties": {"error": {"type": "string"}, "reason": {"type": "string"}},
    },
    "PolicyRef": {
        "type": "object",
        "required": ["name", "version"],
        "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
    },
    "RateRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "client_id": {"type": "string", "minLength": 1},
            "cost": {"type": "number", "minimum": 0, "default": 1},
            "route": {"type": ["string", "null"]},
        },
    },
    "Decision": {
        "type": "object",
        "required": [
            "allowed",
            "remaining",
            "limit",
            "retry_after",
            "reset_after",
            "cost",
            "client_id",
            "route",
            "tier",
            "policy",
        ],
        "properties": {
            "allowed": {"type": "boolean"},
            "remaining": {"type": "number", "minimum": 0},
            "limit": {"type": "number", "minimum": 0},
            "retry_after": {
                "type": ["number", "null"],
                "description": "Seconds until a retry can succeed; null: never.",
            },
            "reset_after": {
                "type": ["number", "null"],
                "description": "Seconds until every bucket is full; null: never.",
            },
            "cost": {"type": "number"},
            "client_id": {"type": "string"},
            "route": {"type": ["string", "null"]},
            "tier": {"type": "string"},
            "policy": _ref("PolicyRef"),
            "error": {"type": "string"},
            "reason": {"type": "string"},
        },
    },
    "BatchRequest": {
        "type": "object",
        "required": ["requests"],
        "additionalProperties": False,
        "properties": {"requests": {"type": "array", "items": _ref("RateRequest")}},
    },
    "BatchResponse": {
        "type": "object",
        "required": ["decisions"],
        "properties": {"decisions": {"type": "array", "items": _ref("Decision")}},
    },
    "Limit": {
        "type": "object",
        "required": ["name", "capacity", "refill_rate", "window_s"],
        "properties": {
            "name": {"type": "string"},
            "capacity": {"type": "number"},
            "refill_rate": {"type": "number"},
            "window_s": {"type": ["integer", "null"]},
        },
    },
    "Params": {
        "type": "object",
        "required": [
            "client_id",
            "route",
            "tier",
            "policy",
            "limits",
            "source",
            "model_version",
            "window",
            "predicted",
            "governor",
        ],
        "properties": {
            "client_id": {"type": "string"},
            "route": {"type": ["string", "null"]},
            "tier": {"type": "string"},
            "policy": _ref("PolicyRef"),
            "limits": {"type": "array", "items": _ref("Limit")},
            "source": {
                "type": "string",
                "enum": ["model", "tier_default", "static_override"],
                "description": "model: predicted for this client; tier_default: its tier's "
                "limits (no history, no model, or a route with limits of its own); "
                "static_override: the client's own limits in the policy file.",
            },
            "model_version": {
                "type": ["string", "null"],
                "description": "The model that predicted the limits (null: not learned).",
            },
            "window": {
                "type": ["object", "null"],
                "description": "The window the learned limits were computed for (UTC).",
                "required": ["start", "end"],
                "properties": {
                    "start": {"type": "string", "format": "date-time"},
                    "end": {"type": "string", "format": "date-time"},
                },
            },
            "predicted": {
                "type": ["object", "null"],
                "description": "The learned bucket before the governor scaled it.",
                "required": ["capacity", "refill_rate"],
                "properties": {
                    "capacity": {"type": "number", "minimum": 0},
                    "refill_rate": {"type": "number", "minimum": 0},
                },
            },
            "governor": {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "description": "The backend-health multiplier applied to these limits.",
            },
        },
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string"},
            "policy": _ref("PolicyRef"),
            "telemetry": {
                "type": "object",
                "description": "The telemetry store (its dialect) and the events queued for it.",
                "required": ["store", "queue_depth"],
                "properties": {
                    "store": {"type": "string"},
                    "queue_depth": {"type": "integer", "minimum": 0},
                },
            },
            "model": {
                "type": "object",
                "description": "policy_mode model: the model serving (null: none, the static "
                "policy serves, and detail says why), the clients with learned limits, the "
                "window they apply to, and the governor's multipliers.",
                "required": ["mode", "serving"],
                "properties": {
                    "mode": {"type": "string"},
                    "registry": {"type": "string"},
                    "serving": {"type": ["string", "null"]},
                    "clients": {"type": "integer", "minimum": 0},
                    "window": {"type": ["string", "null"]},
                    "governor": {"type": "object"},
                    "detail": {"type": "string"},
                },
            },
        },
    },
    "TelemetryEvent": {
        "type": "object",
        "description": "One line of a POST /api/v1/telemetry body.",
        "required": ["client_id", "timestamp", "response_time_ms", "status_code"],
        "additionalProperties": False,
        "properties": {
            "event_id": {
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": 128,
                "description": "Idempotence key: an event id is stored once. Absent or null: "
                "one is made up (unique, so a retried body is stored twice).",
            },
            "client_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": 256,
                "description": "At most max_client_id_length characters (256 by default).",
            },
            "timestamp": {
                "description": "UTC: seconds since the epoch, or RFC 3339 with an offset; "
                "within 1990..2100.",
                "anyOf": [
                    {"type": "number", "minimum": 631152000, "maximum": 4102444800},
                    {"type": "string", "format": "date-time"},
                ],
            },
            "response_time_ms": {"type": "number", "minimum": 0, "maximum": 86400000},
            "status_code": {"type": "integer", "minimum": 100, "maximum": 599},
            "route": {"type": ["string", "null"], "maxLength": 2048},
            "method": {"type": ["string", "null"], "maxLength": 16},
            "bytes": {"type": ["integer", "null"], "minimum": 0, "maximum": 2**62},
        },
    },
    "TelemetryLineError": {
        "type": "object",
        "required": ["line", "reason", "detail"],
        "properties": {
            "line": {"type": "integer", "minimum": 1, "description": "1-based line number."},
            "reason": {
                "type": "string",
                "description": "bad_json, missing_field, bad_type, bad_timestamp, "
                "out_of_range, too_long or unknown_field.",
            },
            "detail": {"type": "string"},
        },
    },
    "TelemetryAccepted": {
        "type": "object",
        "required": ["accepted", "rejected", "errors"],
        "properties": {
            "accepted": {"type": "integer", "minimum": 0},
            "rejected": {"type": "integer", "minimum": 0},
            "errors": {
                "type": "array",
                "maxItems": 100,
                "description": "The first 100 rejected lines, in order.",
                "items": _ref("TelemetryLineError"),
            },
        },
    },
    "TelemetryError": {
        "type": "object",
        "required": ["error", "reason"],
        "properties": {
            "error": {"type": "string"},
            "reason": {"type": "string"},
            "errors": {"type": "array", "items": _ref("TelemetryLineError")},
        },
    },
    "Reloaded": {
        "type": "object",
        "required": ["reloaded", "policy"],
        "properties": {"reloaded": {"type": "boolean"}, "policy": _ref("PolicyRef")},
    },
    "Canary": {
        "type": "object",
        "required": ["champion", "canary", "config"],
        "properties": {
            "champion": {"type": ["string", "null"]},
            "canary": {
                "type": ["object", "null"],
                "description": "The latest canary: version, phase (shadow, canary, promoted, "
                "rolled_back, aborted), weight (percent of clients), failed_checks, the last "
                "analysis's checks, and its history.",
                "required": ["version", "phase", "weight", "failed_checks", "history"],
                "properties": {
                    "version": {"type": "string"},
                    "phase": {"enum": ["shadow", "canary", "promoted", "rolled_back", "aborted"]},
                    "weight": {"type": "number"},
                    "failed_checks": {"type": "integer"},
                    "history": {"type": "array", "items": {"type": "object"}},
                },
            },
            "config": {"type": "object"},
        },
    },
}


def openapi_spec() -> dict[str, Any]:
    """The document served at ``/openapi.json``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "OpenClaw Rating API",
            "version": __version__,
            "description": "Token-bucket rate-limit decisions per client.",
        },
        "paths": {
            "/api/v1/rate": {
                "get": {
                    "summary": "Decide one request",
                    "operationId": "rate_get",
                    "parameters": _QUERY_PARAMS,
                    "responses": _RATE_RESPONSES,
                },
                "post": {
                    "summary": "Decide one request (fields in a JSON body)",
                    "operationId": "rate_post",
                    "parameters": _QUERY_PARAMS,
                    "requestBody": {
                        "required": False,
                        "content": {"application/json": {"schema": _ref("RateRequest")}},
                    },
                    "responses": _RATE_RESPONSES,
                },
            },
            "/api/v1/rate/batch": {
                "post": {
                    "summary": "Decide many requests at once",
                    "operationId": "rate_batch",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("BatchRequest")}},
                    },
                    "responses": {
                        "200": _json(_ref("BatchResponse"), "One decision per request, in order."),
                        **_ERRORS,
                    },
                },
            },
            "/api/v1/params/{client_id}": {
                "get": {
                    "summary": "The limits a client is charged against",
                    "operationId": "params",
                    "parameters": [
                        {
                            "name": "client_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1},
                        },
                        {"name": "route", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {"200": _json(_ref("Params"), "The limits."), **_ERRORS},
                },
            },
            "/api/v1/admin/reload": {
                "post": {
                    "summary": "Reload the policy file",
                    "operationId": "admin_reload",
                    "security": [{"bearer": []}],
                    "responses": {
                        "200": _json(_ref("Reloaded"), "The new policy is in force."),
                        "401": _json(_ref("Error"), "Missing or wrong bearer token."),
                        "403": _json(_ref("Error"), "Admin endpoints are disabled."),
                        "409": _json(_ref("Error"), "The file is invalid; the old policy stays."),
                    },
                },
            },
            "/api/v1/admin/canary": {
                "get": {
                    "summary": "The model canary: champion, canary status and history, config",
                    "operationId": "admin_canary_status",
                    "security": [{"bearer": []}],
                    "responses": {"200": _json(_ref("Canary"), "The canary."), **_ADMIN_ERRORS},
                },
                "post": {
                    "summary": "Start a model canary (shadow first) of a version, by default "
                    "the registry's challenger",
                    "operationId": "admin_canary_start",
                    "security": [{"bearer": []}],
                    "requestBody": _optional_strings("version", "reason"),
                    "responses": {
                        "202": _json(_ref("Canary"), "The canary started (in shadow)."),
                        **_ADMIN_ERRORS,
                    },
                },
            },
            "/api/v1/admin/canary/abort": {
                "post": {
                    "summary": "Abort the running canary: the champion serves everyone",
                    "operationId": "admin_canary_abort",
                    "security": [{"bearer": []}],
                    "requestBody": _optional_strings("reason"),
                    "responses": {"200": _json(_ref("Canary"), "Aborted."), **_ADMIN_ERRORS},
                },
            },
            "/api/v1/telemetry": {
                "post": {
                    "summary": "Ingest telemetry events (NDJSON: one event object per line)",
                    "description": "Each line is validated on its own: bad lines are rejected "
                    "with their line number and reason, the good ones are accepted. The body is "
                    "limited to telemetry_max_body_bytes (16 MiB by default).",
                    "operationId": "telemetry_ingest",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/x-ndjson": {
                                "schema": {
                                    "type": "array",
                                    "description": "Each item is one line of the body.",
                                    "items": _ref("TelemetryEvent"),
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _json(
                            _ref("TelemetryAccepted"),
                            "Accepted: the valid events are queued for the store.",
                        ),
                        "400": _json(
                            _ref("TelemetryError"),
                            "Not NDJSON: no line holds a JSON object (or the body is empty).",
                        ),
                        "413": _json(
                            _ref("Error"),
                            "The body is larger than allowed, or holds more events than the "
                            "whole queue (telemetry_queue_max).",
                        ),
                        "415": _json(
                            _ref("Error"),
                            "The Content-Type is not NDJSON (application/x-ndjson, "
                            "application/ndjson, application/jsonl, application/json, or none).",
                        ),
                        "503": {
                            **_json(
                                _ref("Error"),
                                "The queue is full (retry after Retry-After seconds; nothing "
                                "of the body was taken), or telemetry is not configured.",
                            ),
                            "headers": {
                                "Retry-After": {
                                    "description": "Seconds to wait (when the queue is full).",
                                    "schema": {"type": "string"},
                                }
                            },
                        },
                    },
                },
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "operationId": "healthz",
                    "responses": {"200": _json(_ref("Status"), "The process serves.")},
                },
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: store reachable, policy loaded",
                    "operationId": "readyz",
                    "responses": {
                        "200": _json(_ref("Status"), "Ready."),
                        "503": _json(_ref("Error"), "Not ready, and why."),
                    },
                },
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "operationId": "metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                },
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {"200": {"description": "OpenAPI 3.1."}},
                },
            },
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
