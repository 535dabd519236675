"""Errors of the API, always as JSON: one DRF exception handler maps the workflow's errors to status
codes, and a middleware makes sure no HTML error page (Django's 404/500, the DEBUG traceback, a
body-size refusal) ever leaves a path under the API prefix."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core.exceptions import (
    DisallowedHost,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
)
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from stackgan_django import services

logger = logging.getLogger(__name__)
API_PREFIX = "/api/"


class Gone(exceptions.APIException):
    """A resource that existed and was withdrawn on purpose (a revoked asset): 410 with the reason."""

    status_code = status.HTTP_410_GONE
    default_detail = "This resource was withdrawn."
    default_code = "gone"

    def __init__(self, detail: str, **extra: Any):
        super().__init__(detail)
        self.extra = extra


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The service cannot take requests right now."
    default_code = "unavailable"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The record is not in a state that allows this."
    default_code = "conflict"


def _translate(exc: Exception) -> Exception:
    """The workflow's and Django's errors as DRF exceptions (most specific first)."""
    if isinstance(exc, services.InvalidSubmission):
        return exceptions.ValidationError(exc.errors)
    if isinstance(exc, services.NoActiveModel):
        return ServiceUnavailable(str(exc))
    if isinstance(exc, services.UnknownRequest):
        return exceptions.NotFound(str(exc))
    if isinstance(exc, services.TransitionError):
        return Conflict(str(exc))
    if isinstance(exc, services.WorkflowError):
        return exceptions.ValidationError({"detail": str(exc)})
    if isinstance(exc, RequestDataTooBig):
        from stackgan_django.input_limits import PayloadTooLarge

        return PayloadTooLarge(str(exc) or PayloadTooLarge.default_detail)
    if isinstance(exc, DisallowedHost):
        return exceptions.ParseError(UNKNOWN_HOST)
    if isinstance(exc, TooManyFieldsSent | SuspiciousOperation):
        return exceptions.ParseError(str(exc) or "The request is malformed.")
    if isinstance(exc, DjangoValidationError):
        return exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages})
    return exc


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]: every known error becomes a JSON body and a 4xx/503; an
    unknown one is left to the middleware (JSON 500, logged)."""
    exc = _translate(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, Gone):
        response.data = {**(response.data if isinstance(response.data, dict) else {"detail": response.data}), **exc.extra}
    return response


# A plain-text error body kept as the JSON detail: the guards' messages are a sentence or two.
MAX_PLAIN_DETAIL_CHARS = 500


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIX)


def json_error(status_code: int, detail: str | None = None) -> JsonResponse:
    phrase = HTTPStatus(status_code).phrase if status_code in HTTPStatus._value2member_map_ else "Error"
    return JsonResponse({"detail": detail or phrase}, status=status_code)


class ApiJsonErrorsMiddleware:
    """Under the API prefix: bodies larger than the view accepts are refused from their declared
    length (413, nothing read), unhandled exceptions answer a JSON 500 (also with DEBUG on), and any
    HTML error page that a lower layer produced is replaced by a JSON body with the same status."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not is_api_path(request.path_info):
            return self.get_response(request)
        response = self.get_response(request)
        content_type = response.get("Content-Type", "")
        if response.status_code >= 400 and not content_type.startswith(("application/json", "application/problem+json")):
            detail = None
            if response.status_code == 413:
                detail = "The request body is too large."
            if content_type.startswith("text/plain") and not response.streaming:
                # A lower layer's own message (the input guards write plain text): kept as the detail.
                detail = response.content.decode("utf-8", errors="replace")[:MAX_PLAIN_DETAIL_CHARS] or detail
            replacement = json_error(response.status_code, detail)
            for header in ("Allow", "Retry-After", "WWW-Authenticate"):
                if header in response:
                    replacement[header] = response[header]
            return replacement
        return response

    def process_view(self, request: HttpRequest, view_func, view_args, view_kwargs) -> HttpResponse | None:
        if not is_api_path(request.path_info):
            return None
        view_class = getattr(view_func, "cls", None) or getattr(view_func, "view_class", None)
        body_limit = getattr(view_class, "body_limit", None)
        limit = body_limit() if callable(body_limit) else settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return json_error(400, "The Content-Length header is not a number.")
        if limit and declared > limit:
            return json_error(413, f"The request body is {declared} bytes; this endpoint takes at most {limit}.")
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_api_path(request.path_info):
            return None
        if isinstance(exception, Http404):
            return json_error(404, "Not found.")
        if isinstance(exception, PermissionDenied):
            return json_error(403, "You do not have permission to perform this action.")
        translated = _translate(exception)
        if isinstance(translated, exceptions.APIException):
            body = translated.detail if isinstance(translated.detail, dict) else {"detail": translated.detail}
            return JsonResponse(body,
                                status=translated.status_code, safe=False)
        logger.exception("unhandled error on %s %s", request.method, request.path_info)
        return json_error(500, "Internal server error; the error was logged.")


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """config.urls.handler404: JSON under the API prefix, Django's page elsewhere."""
    if is_api_path(request.path_info):
        return json_error(404, "Not found.")
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    if is_api_path(request.path_info):
        return json_error(500, "Internal server error; the error was logged.")
    from django.views.defaults import server_error

    return server_error(request)


# Django's message for a bad Host header tells whoever sent it which setting to change; a client of
# the API needs to know only that the name is not served here.
UNKNOWN_HOST = "The request's Host header names no site served here."


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_path(request.path_info):
        if isinstance(exception, DisallowedHost):
            return json_error(400, UNKNOWN_HOST)
        return json_error(400, str(exception) if exception else None)
    from django.views.defaults import bad_request

    return bad_request(request, exception)


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_path(request.path_info):
        return json_error(403, "You do not have permission to perform this action.")
    from django.views.defaults import permission_denied

    return permission_denied(request, exception)


__all__ = ["API_PREFIX", "ApiJsonErrorsMiddleware", "Conflict", "Gone", "ServiceUnavailable", "exception_handler",
           "handler400", "handler403", "handler404", "handler500", "is_api_path"]
