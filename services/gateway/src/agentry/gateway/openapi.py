"""The OpenAPI document as the gateway really answers: bearer security, the error body on every
error status, the run events' schemas, operation ids for SDK generators; and /docs, /redoc served
with their assets from this process (no CDN)."""

from __future__ import annotations

from importlib import resources
from typing import Any

import pydantic
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from .sse_docs import EVENT_SCHEMA_PREFIX

DOCS_STATIC = "/docs/static"

# Every error answer: {"error": {"code", "message", "fields"?}}.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Stable, machine-readable: branch on this."},
                "message": {"type": "string", "description": "For people; may change."},
                "fields": {
                    "type": "array",
                    "description": "422 only: each field refused and why.",
                    "items": {
                        "type": "object",
                        "required": ["field", "message"],
                        "properties": {
                            "field": {
                                "type": "string",
                                "description": "`body.<name>`, `query.<name>`, `path.<name>` or `header.<name>`.",
                            },
                            "message": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
    "example": {
        "error": {
            "code": "validation_error",
            "message": "invalid request: body.prompt: must not be empty",
            "fields": [{"field": "body.prompt", "message": "must not be empty"}],
        }
    },
}

# What each error status means on every route that can answer it, with the codes it carries.
ERROR_STATUSES: dict[int, str] = {
    400: "A webhook whose signature does not verify (`invalid_signature`), or a request the payment "
    "provider refused (`payments_request_refused`).",
    401: "No credential, or one that is invalid or expired (`unauthenticated`, `invalid_token`). "
    "Sent with `WWW-Authenticate: Bearer`.",
    402: "The account has no credit left for a run (`insufficient_credits`).",
    403: "The credential may not do this (`forbidden`, `permission_denied`).",
    404: "No such resource for this account: another account's resource is answered the same "
    "(`thread_not_found`, `run_not_found`, `sandbox_not_found`, `not_found`, ...).",
    409: "The resource's state refuses it (`run_active`, `run_not_waiting`, ...).",
    422: "The request's input is refused: a body, query, path or header value (`validation_error` "
    "with `fields`, or a specific code such as `invalid_last_event_id`, `invalid_argument`, "
    "`path_outside_sandbox`, `invalid_idempotency_key`).",
    413: "The upload is over the size limit (`file_too_large`).",
    415: "The body is not of the type the route takes (`unsupported_media_type`).",
    429: "Too many requests (`rate_limited`, `too_many_active_runs`); wait `Retry-After` seconds.",
    500: "A bug in the gateway or a service (`upstream_error`).",
    502: "A service failed or refused the gateway (`upstream_error`).",
    503: "A service the request needs is unavailable (`unavailable`); retry after `Retry-After` seconds.",
    504: "A service did not answer in time (`deadline_exceeded`).",
    507: "The sandbox's disk quota is used up (`disk_quota_exceeded`).",
    501: "Payments are not configured on this installation (`payments_not_configured`).",
}
# Statuses particular to some operations, beyond those every route of their kind answers.
_EXTRA_STATUSES: dict[str, set[int]] = {
    "startRun": {402, 409},
    "initiateAgent": {402, 413, 415, 507},
    "uploadFile": {413, 415, 507},
    "addMessage": {409},
    "resumeRun": {409},
    "deleteMessage": {409},
    "stopRun": {409},
    "createApiKey": {409},
    "createTeam": {409},
    "createInvitation": {409},
    "acceptInvitation": {409},
    "changeRole": {409},
    "removeMember": {409},
    "signUp": {409},
    "ensureProjectSandbox": {409},
    "deleteFile": {409},
    "getPreviewLink": {409},
    "execInSandbox": {409},
    "proxyPreview": {409, 502},
    "stripeWebhook": {400, 413, 501},
    "createCheckout": {400, 403, 409, 501},
    "createPortal": {400, 403, 501},
}
# Answered by any route that calls a service (a service's RESOURCE_EXHAUSTED is a 429).
_UPSTREAM = {422, 429, 500, 502, 503, 504}
_LIVENESS = "/api/health/live"


# Route functions whose name alone would make a vague operation id.
_OPERATION_IDS = {
    "signup": "signUp",
    "token": "signIn",
    "refresh": "refreshToken",
    "logout": "signOut",
    "jwks": "getJwks",
    "live": "getLiveness",
    "health": "getHealth",
    "upload": "uploadFile",
    "download": "downloadFile",
    "preview": "getPreviewLink",
    "preview_proxy": "proxyPreview",
    "invite": "createInvitation",
    "ensure_active": "ensureProjectSandbox",
    "me": "getMe",
}


def operation_id(route: APIRoute) -> str:
    """camelCase of the route function's name (`list_threads` -> `listThreads`), or a clearer name."""
    if route.name in _OPERATION_IDS:
        return _OPERATION_IDS[route.name]
    head, *rest = route.name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _event_schemas() -> dict[str, Any]:
    """components/schemas for every run event type, and RunEvent: the one-of them by `type`.
    agentpress is imported here, when the document is first built: importing the package (its
    model layer, httpx and what that pulls in) costs the gateway ~15 MB of RSS it needs for
    nothing else."""
    from agentpress import events as agentpress_events

    out: dict[str, Any] = {}
    mapping: dict[str, str] = {}
    for event_type, cls in agentpress_events._TYPES.items():
        name = EVENT_SCHEMA_PREFIX + "".join(w.capitalize() for w in event_type.split("_"))
        schema = pydantic.TypeAdapter(cls).json_schema(
            ref_template=f"#/components/schemas/{EVENT_SCHEMA_PREFIX}{{model}}"
        )
        for def_name, definition in schema.pop("$defs", {}).items():
            out[EVENT_SCHEMA_PREFIX + def_name] = definition
        schema["title"] = name
        schema["properties"] = {
            "seq": {"type": "integer", "minimum": 1, "description": "The event's number in the run (the frame's id)."},
            **schema.get("properties", {}),
        }
        schema["required"] = sorted({"seq", "type", *schema.get("required", [])})
        out[name] = schema
        mapping[event_type] = f"#/components/schemas/{name}"
    out[EVENT_SCHEMA_PREFIX] = {
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }
    return out


def _error_response(status: int, existing: dict[str, Any] | None) -> dict[str, Any]:
    description = (existing or {}).get("description") or ERROR_STATUSES.get(status, "An error.")
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = ERROR_SCHEMA
    schemas.update(_event_schemas())
    from .exec_routes import ExecExitLine, ExecOutputLine  # referenced by hand from a streamed answer

    for model in (ExecOutputLine, ExecExitLine):
        schemas[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
    security = components.setdefault("securitySchemes", {})
    security.update(
        {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "An access token from POST /api/auth/token, or an API key (`agentry_sk_…`).",
            },
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "An API key."},
        }
    )
    for path, item in doc["paths"].items():
        for op in item.values():
            responses = op.setdefault("responses", {})
            statuses = {500} if path == _LIVENESS else set(_UPSTREAM)
            if path != _LIVENESS and not path.startswith("/api/health"):
                statuses.add(401)  # a missing or refused credential (or, on sign-in, wrong ones)
            if op.get("security"):  # derived from get_caller's security markers
                op["security"] = [{"bearer": []}, {"apiKey": []}]
                if any(p.get("name") == "access_token" for p in op.get("parameters", [])):
                    op["security"].append({})  # or a stream token in ?access_token=
                statuses.add(403)
            if "{" in path:
                statuses.add(404)
            statuses |= _EXTRA_STATUSES.get(op.get("operationId", ""), set())
            statuses |= {int(code) for code in responses if str(code)[0] in "45"}
            for status in sorted(statuses):
                responses[str(status)] = _error_response(status, responses.get(str(status)))
    doc["openapi"] = "3.1.0"
    app.openapi_schema = doc
    return doc


def install_docs(app: FastAPI) -> None:
    """/docs (Swagger UI, its Authorize button wired to the bearer scheme) and /redoc, with their
    scripts and styles served from the fastapi-offline package's copy: no network needed."""
    static = resources.files("fastapi_offline") / "static"
    app.mount(DOCS_STATIC, StaticFiles(directory=str(static)), name="docs-static")
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_STATIC}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True, "displayOperationId": True},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            redoc_js_url=f"{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_STATIC}/favicon.png",
            with_google_fonts=False,
        )
