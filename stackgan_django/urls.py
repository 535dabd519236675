"""URLs of the REST API; a host project includes them, e.g. path("api/", include("stackgan_django.urls"))."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from stackgan_django.api import ApprovedAssetViewSet, GenerationRequestViewSet, VerifyView

router = DefaultRouter()
router.register("assets", ApprovedAssetViewSet, basename="asset")
router.register("requests", GenerationRequestViewSet, basename="request")

urlpatterns = [
    path("verify/", VerifyView.as_view(), name="stackgan-verify"),
    path("schema/", SpectacularAPIView.as_view(), name="stackgan-schema"),
    *router.urls,
]
