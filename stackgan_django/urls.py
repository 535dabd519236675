"""URLs of the REST API; a host project includes them under ``api/``:
``path("api/", include("stackgan_django.urls"))``. Version 1 lives under ``v1/``; the unversioned
paths of the first release redirect there (308 keeps the method and body) for one release."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponsePermanentRedirect
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from stackgan_django.api import AssetViewSet, GenerationRequestViewSet, SignedFileView, VerifyView
from stackgan_django.files import staff_file

router = SimpleRouter()
router.register("assets", AssetViewSet, basename="asset")
router.register("requests", GenerationRequestViewSet, basename="request")


class SwaggerPage(SpectacularSwaggerView):
    """The API's documentation page, for GET and HEAD: DRF answers OPTIONS with the view's metadata,
    which the page's HTML renderer has no template for (a 500)."""

    http_method_names = ["get", "head"]


class PermanentRedirect308(HttpResponsePermanentRedirect):
    status_code = 308


# Exempt from CSRF: the redirect changes nothing, and a client with an API key has no CSRF cookie, so
# its POST must reach the 308 (which keeps method and body); the view it lands on applies its own
# checks, CSRF for a session included.
@csrf_exempt
def legacy_redirect(request: HttpRequest, rest: str) -> PermanentRedirect308:
    """/api/<rest> -> /api/v1/<rest>; the old download action is the new file action."""
    base = request.path_info[: len(request.path_info) - len(rest)]
    if rest.endswith("/download/"):
        rest = rest[: -len("download/")] + "file/"
    target = f"{base}v1/{rest}"
    if request.META.get("QUERY_STRING"):
        target += "?" + request.META["QUERY_STRING"]
    response = PermanentRedirect308(target)
    response["Deprecation"] = "true"
    # The Location header as Django percent-encodes it, commas too: the raw path may hold a CR (no
    # header value may) or "<", ">" and "," that would close the link and add others of the caller's
    # choosing ("/api/assets/>, <https://evil.example/x.css>; rel=stylesheet").
    response["Link"] = f'<{response["Location"].replace(",", "%2C")}>; rel="successor-version"'
    return response


v1_patterns = [
    path("v1/verify/", VerifyView.as_view(), name="stackgan-verify"),
    path("v1/files/<str:token>/", SignedFileView.as_view(), name="stackgan-signed-file"),
    # What FieldFile.url of the private storage points at: session login and a permission checked.
    path("v1/staff/files/<path:name>", staff_file, name="stackgan-staff-file"),
    path("v1/schema/", SpectacularAPIView.as_view(api_version="v1"), name="stackgan-schema"),
    path("v1/docs/", SwaggerPage.as_view(url_name="stackgan-schema"), name="stackgan-docs"),
    path("v1/", include(router.urls)),
]

urlpatterns = [
    *v1_patterns,
    re_path(r"^(?P<rest>(?:assets|requests|verify|schema)(?:/.*)?)$", legacy_redirect, name="stackgan-legacy"),
]
