"""REST API for other systems: approved assets (list, detail, signed download), requests, and
verification of any file. Token or session authentication; OpenAPI schema at /api/schema/."""

from __future__ import annotations

from django.http import FileResponse, HttpResponseNotModified
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from stackgan_django import services
from stackgan_django.models import Asset, GenerationRequest
from stackgan_django.provenance import DIGITAL_SOURCE_TYPE

MAX_UPLOAD_BYTES = 50 * 1024 * 1024


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class AssetSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    caption = serializers.CharField(source="request.caption", read_only=True)
    model_version = serializers.CharField(source="request.model_version.name", read_only=True)
    approved_at = serializers.DateTimeField(source="decided_at", read_only=True)
    ai_generated = serializers.SerializerMethodField()
    digital_source_type = serializers.SerializerMethodField()
    attribution = serializers.SerializerMethodField()
    sha256 = serializers.CharField(source="approved_sha256", read_only=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Asset
        fields = ["id", "caption", "model_version", "created_at", "approved_at", "width", "height", "ai_generated",
                  "digital_source_type", "attribution", "sha256", "provenance_state", "download_url"]

    def get_ai_generated(self, asset) -> bool:
        return True

    def get_digital_source_type(self, asset) -> str:
        return DIGITAL_SOURCE_TYPE

    def get_attribution(self, asset) -> list[str]:
        """Credit lines owed to the training data's rights holders (from the model's lineage)."""
        model_version = asset.request.model_version
        lineage = model_version.parsed_lineage if model_version else None
        return lineage.attributions() if lineage else []

    def get_download_url(self, asset) -> str:
        request = self.context.get("request")
        path = f"/api/assets/{asset.public_id}/download/"
        return request.build_absolute_uri(path) if request else path


@extend_schema(parameters=[
    OpenApiParameter("caption", str, description="words the caption contains"),
    OpenApiParameter("created_after", str, description="ISO date or datetime"),
    OpenApiParameter("model", str, description="model version name"),
])
class ApprovedAssetViewSet(viewsets.ReadOnlyModelViewSet):
    """Approved assets only: pending, rejected and revoked assets are never listed or served."""

    serializer_class = AssetSerializer
    permission_classes = [permissions.IsAuthenticated]
    pagination_class = Pagination
    lookup_field = "public_id"

    def get_queryset(self):
        queryset = (Asset.objects.filter(state=Asset.State.APPROVED).select_related("request__model_version")
                    .order_by("-decided_at", "-pk"))
        params = self.request.query_params
        if params.get("caption"):
            for word in params["caption"].split()[:10]:
                queryset = queryset.filter(request__caption__icontains=word)
        if params.get("created_after"):
            from django.utils.dateparse import parse_date, parse_datetime

            value = parse_datetime(params["created_after"]) or parse_date(params["created_after"])
            if value is None:
                raise ValidationError({"created_after": "use an ISO date (2026-01-31) or datetime"})
            queryset = queryset.filter(created_at__gte=value)
        if params.get("model"):
            queryset = queryset.filter(request__model_version__name=params["model"])
        return queryset

    def get_object(self):
        try:
            return super().get_object()
        except (ValueError, serializers.ValidationError):
            from django.http import Http404

            raise Http404 from None

    @extend_schema(responses={(200, "image/png"): bytes})
    @action(detail=True, methods=["get"])
    def download(self, request, public_id=None):
        """The signed file carrying both manifests (generation and review)."""
        asset = self.get_object()
        etag = f'"{asset.approved_sha256}"'
        if request.headers.get("If-None-Match") == etag:
            return HttpResponseNotModified(headers={"ETag": etag})
        response = FileResponse(asset.approved_file.open("rb"), content_type="image/png",
                                filename=f"{asset.public_id}.png")
        response["ETag"] = etag
        return response


class RequestSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    caption = serializers.CharField(max_length=100_000, trim_whitespace=False)
    num_images = serializers.IntegerField(default=4)
    seed = serializers.IntegerField(required=False, allow_null=True, default=None)
    purpose = serializers.CharField(max_length=50, default="editorial")
    refused_because = serializers.SerializerMethodField()
    assets = serializers.SerializerMethodField()

    class Meta:
        model = GenerationRequest
        fields = ["id", "caption", "num_images", "seed", "purpose", "state", "flagged", "created_at",
                  "finished_at", "refused_because", "assets"]
        read_only_fields = ["state", "flagged", "created_at", "finished_at"]

    def get_refused_because(self, obj) -> list[dict]:
        return [{"rule_id": d.rule_id, "message": d.message} for d in obj.decisions.filter(outcome="deny")]

    def get_assets(self, obj) -> list[dict]:
        return [{"id": str(a.public_id), "state": a.state} for a in obj.assets.all()]


class CanRequestImages(permissions.BasePermission):
    def has_permission(self, request, view):
        if request.method in permissions.SAFE_METHODS:
            return request.user.is_authenticated
        return request.user.has_perm("stackgan_django.add_generationrequest")


class GenerationRequestViewSet(mixins.CreateModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Ask for images and poll for the result. A caption the usage policy refuses is answered 422
    with the rules and messages; bad input is 400."""

    serializer_class = RequestSerializer
    permission_classes = [CanRequestImages]
    lookup_field = "public_id"
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    def get_queryset(self):
        return GenerationRequest.objects.filter(requested_by=self.request.user)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            created = services.submit_request(caption=data["caption"], num_images=data["num_images"],
                                              seed=data.get("seed"), purpose=data["purpose"], user=request.user)
        except services.InvalidSubmission as exc:
            raise ValidationError(exc.errors) from exc
        except services.NoActiveModel as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        code = status.HTTP_422_UNPROCESSABLE_ENTITY if created.state == GenerationRequest.State.POLICY_DENIED \
            else status.HTTP_202_ACCEPTED
        return Response(self.get_serializer(created).data, status=code)


class VerifySerializer(serializers.Serializer):
    file = serializers.FileField()


class VerifyView(APIView):
    """Upload any image: C2PA validation, our watermark, and the asset it came from."""

    permission_classes = [permissions.IsAuthenticated]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": VerifySerializer}, responses={200: dict})
    def post(self, request):
        serializer = VerifySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise ValidationError({"file": "the file is larger than 50 MB"})
        return Response(services.verify_file(upload.read()))


