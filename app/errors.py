"""Errors under /api answer as JSON {"error": {"code", "message"}}; elsewhere as an HTML page."""
from __future__ import annotations

from flask import jsonify, render_template, request
from werkzeug.exceptions import HTTPException

# Stable machine-readable codes for the HTTP errors Werkzeug raises itself.
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    500: "internal_error",
}


class ApiError(Exception):
    """An error answered to the client: HTTP status, stable code, message saying what is allowed."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None, **details):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}  # e.g. Retry-After
        self.details = details


def json_error(status: int, code: str, message: str, **details):
    return jsonify({"error": {"code": code, "message": message, **details}}), status


def wants_json() -> bool:
    return request.path.startswith("/api/")


def handle_api_error(error: ApiError):
    body, status = json_error(error.status, error.code, error.message, **error.details)
    return body, status, error.headers


def handle_http_exception(error: HTTPException):
    status = error.code or 500
    if status == 413:
        message = f"request body is larger than the limit of {request.max_content_length} bytes"
    elif status == 405:
        message = f"{request.method} is not allowed on {request.path}; allowed: {', '.join(error.valid_methods or [])}"
    elif status == 404 and wants_json():
        message = f"no endpoint {request.path}; see /api/v1/openapi.json"
    else:
        message = error.description
    # Werkzeug's own headers: Allow on a 405, as HTTP requires.
    headers = [(name, value) for name, value in error.get_headers() if name.lower() != "content-type"]
    if wants_json():
        body, status = json_error(status, HTTP_CODES.get(status, "http_error"), message)
        return body, status, headers
    return render_template("error.html", status=status, title=error.name, message=message), status, headers


def handle_unexpected(error: Exception):
    from flask import current_app

    current_app.logger.exception("unhandled error on %s %s", request.method, request.path)
    if wants_json():
        return json_error(500, "internal_error", "internal error; the server log has the details")
    return render_template("error.html", status=500, title="Internal Server Error",
                           message="Something went wrong; the server log has the details."), 500


def init_app(app) -> None:
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
