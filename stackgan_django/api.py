"""REST API v1 for other systems: approved assets (list, detail, file, C2PA manifest), image requests,
and verification of any file. API keys with scopes (``Authorization: Api-Key ...``) or a staff
session; every bound and status code is in the OpenAPI schema at /api/v1/schema/."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, time
from typing import Any

from django.core.validators import RegexValidator
from django.http import HttpResponse
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.timezone import is_naive, make_aware
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import SAFE_METHODS, AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from stackgan_django import services
from stackgan_django.api_errors import Gone
from stackgan_django.api_keys import ScopeAndModelPermission
from stackgan_django.conf import app_settings
from stackgan_django.disclosure import requester_decision
from stackgan_django.files import (
    SIGNED_HASH_LENGTH,
    BadSignedUrl,
    asset_from_signed_token,
    can_see_unapproved,
    file_response,
    signed_url_expiry,
    signed_url_token,
)
from stackgan_django.input_limits import (
    MULTIPART_ENVELOPE_BYTES,
    BoundedJSONParser,
    ImageRefused,
    OversizedInteger,
    PayloadTooLarge,
    check_image_header,
)
from stackgan_django.models import ApiKey, Asset, GenerationRequest
from stackgan_django.provenance import DIGITAL_SOURCE_TYPE
from stackgan_django.services.editor import IDEMPOTENCY_KEY_PATTERN, MAX_IDEMPOTENCY_KEY_LENGTH

Scope = ApiKey.Scope
MAX_PAGE_SIZE = 200
MAX_FILTER_LENGTH = 200
# In the schema as well as in the check: text without null characters (PostgreSQL cannot store
# them), and a caption with at least one character that is not whitespace by Python's reckoning
# (the services tidy whitespace away) nor ECMAScript's, nor one of the common characters that
# show nothing (zero-width and format characters, combining accents, blank letters). The services
# check "shows something" exactly, by Unicode category, which a schema pattern cannot express.
NO_NULL_PATTERN = r"^[^\x00]*$"
INVISIBLE_CHARACTERS = (r"\u00ad\u0300-\u036f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
                        r"\u202a-\u202e\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\uffa0")
CAPTION_PATTERN = rf"^[^\x00]*[^\s\x00\x1c-\x1f\x85\ufeff{INVISIBLE_CHARACTERS}][^\x00]*$"


# -- documented error bodies ------------------------------------------------------------------------

class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


FIELD_ERRORS = OpenApiResponse(
    OpenApiTypes.OBJECT,
    description="Malformed input: a JSON object whose keys name the fields at fault (or `detail`), each with messages.",
)


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


GONE = OpenApiResponse(inline_serializer("Gone", fields={
    "detail": serializers.CharField(), "reason": serializers.CharField(allow_blank=True),
    "revoked_at": serializers.DateTimeField(allow_null=True)}), description="The asset was revoked; the reason is given.")
COMMON_ERRORS: dict[int, OpenApiResponse] = {
    401: _error("No API key or session, or an unknown, revoked or expired key."),
    403: _error("The key lacks the scope, or its user lacks the Django permission."),
    406: _error("The Accept header asks for a format the API does not produce."),
    429: _error("Too many requests for this key and scope; see Retry-After."),
}


def responses(ok: dict[int, Any], *codes: int, **extra: Any) -> dict[Any, Any]:
    table: dict[Any, Any] = dict(ok)
    for code in codes:
        table[code] = {400: FIELD_ERRORS, 404: _error("Not found (or not approved)."), 410: GONE,
                       413: _error("The body or image is larger than allowed."),
                       409: _error("The Idempotency-Key was used for another request body."),
                       415: _error("Unsupported Content-Type."),
                       422: _error("Refused by the usage policy (see refused_because)."),
                       503: _error("No model version is active.")}[code]
    table.update(COMMON_ERRORS)
    table.update(extra)
    return table


def _text(value: str) -> str:
    """Lone surrogates (possible in JSON escapes) cannot be stored as UTF-8: a 400, not a 500."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise serializers.ValidationError("The text is not valid Unicode (lone surrogate).") from None
    return value


# -- pagination -------------------------------------------------------------------------------------

class Pagination(PageNumberPagination):
    """``page`` (from 1) and ``page_size`` (1-200) are validated: a malformed value is 400, a page
    past the end 404."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def paginate_queryset(self, queryset, request, view=None):
        errors = {}
        for name, maximum in (("page", None), ("page_size", MAX_PAGE_SIZE)):
            raw = request.query_params.get(name)
            if raw is None:
                continue
            if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or int(raw) < 1 or (maximum and int(raw) > maximum):
                errors[name] = [f"A whole number from 1{f' to {maximum}' if maximum else ''}."]
        if errors:
            raise ValidationError(errors)
        return super().paginate_queryset(queryset, request, view)

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        paginated = super().get_paginated_response_schema(schema)
        paginated["required"] = ["count", "results"]
        return paginated

    def get_schema_operation_parameters(self, view) -> list[dict[str, Any]]:
        return [
            {"name": "page", "required": False, "in": "query", "description": "page number, from 1",
             "schema": {"type": "integer", "minimum": 1, "maximum": 999_999_999}},
            {"name": "page_size", "required": False, "in": "query", "description": "results per page (default 50)",
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}},
        ]


# -- assets -----------------------------------------------------------------------------------------

class AssetSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    caption = serializers.CharField(source="request.caption", read_only=True)
    model_version = serializers.CharField(source="request.model_version.name", read_only=True, allow_null=True)
    approved_at = serializers.DateTimeField(source="decided_at", read_only=True)
    ai_generated = serializers.SerializerMethodField()
    digital_source_type = serializers.SerializerMethodField()
    attribution = serializers.SerializerMethodField()
    sha256 = serializers.CharField(source="approved_sha256", read_only=True)
    file_url = serializers.SerializerMethodField()
    manifest_url = serializers.SerializerMethodField()
    signed_url = serializers.SerializerMethodField()
    signed_url_expires_at = serializers.SerializerMethodField()

    class Meta:
        model = Asset
        fields = ["id", "caption", "model_version", "created_at", "approved_at", "width", "height", "ai_generated",
                  "digital_source_type", "attribution", "sha256", "provenance_state", "file_url", "manifest_url",
                  "signed_url", "signed_url_expires_at"]

    def get_ai_generated(self, asset: Asset) -> bool:
        return True

    def get_digital_source_type(self, asset: Asset) -> str:
        return DIGITAL_SOURCE_TYPE

    def get_attribution(self, asset: Asset) -> list[str]:
        """Credit lines owed to the training data's rights holders (from the model's lineage), parsed
        once per model version and response: a page of assets mostly shares one model."""
        model_version = asset.request.model_version
        if model_version is None:
            return []
        parsed = self.context.setdefault("_attributions", {})
        if model_version.pk not in parsed:
            lineage = model_version.parsed_lineage
            parsed[model_version.pk] = list(lineage.attributions()) if lineage else []
        return parsed[model_version.pk]

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path

    def get_file_url(self, asset: Asset) -> str:
        """Needs the API key; answers with ETag and conditional requests."""
        return self._absolute(f"/api/v1/assets/{asset.public_id}/file/")

    def get_manifest_url(self, asset: Asset) -> str:
        return self._absolute(f"/api/v1/assets/{asset.public_id}/manifest/")

    def get_signed_url(self, asset: Asset) -> str:
        """Needs no key, for a browser or a CDN fetch; expires after STACKGAN["SIGNED_URL_MAX_AGE"]
        seconds and stops working at once when the asset is revoked."""
        from django.urls import reverse

        return self._absolute(reverse("stackgan-signed-file", kwargs={"token": signed_url_token(asset)}))

    def get_signed_url_expires_at(self, asset: Asset) -> str:
        return signed_url_expiry().isoformat(timespec="seconds")


class DateOrDateTimeField(serializers.Field):
    """An ISO date (2026-01-31, midnight UTC) or datetime with an optional offset; impossible
    values (2026-02-30, month 13, hour 25, year 0, offset +99:00) are 400 like any other typo."""

    default_error_messages = {"invalid": "Use an ISO date (2026-01-31) or datetime (2026-01-31T12:00:00+01:00)."}

    def get_value(self, dictionary: Any) -> Any:
        # DRF reads an empty query value as "not given"; an empty date is malformed, say so.
        if hasattr(dictionary, "getlist") and self.field_name in dictionary:
            return dictionary[self.field_name]
        return super().get_value(dictionary)

    def to_internal_value(self, data: Any):
        # ASCII only: Django's date pattern would take fullwidth or Arabic-Indic digits as numbers.
        if not isinstance(data, str) or len(data) > 40 or not data.isascii():
            self.fail("invalid")
        data = data.upper()  # RFC 3339 allows "t" and "z"
        try:
            value = parse_datetime(data)
            if value is None:
                day = parse_date(data)
                if day is None:
                    self.fail("invalid")
                value = datetime.combine(day, time.min)
            if is_naive(value):
                value = make_aware(value)
            value.utcoffset()
        except (ValueError, OverflowError, TypeError):
            self.fail("invalid")
        try:
            return value.astimezone(UTC)
        except OverflowError:
            # 0001-01-01T00:00+01:00 is a valid instant before datetime's range: the range's end will do.
            return datetime.min.replace(tzinfo=UTC) if value.year == 1 else datetime.max.replace(tzinfo=UTC)

    def to_representation(self, value: Any) -> str:
        return value.isoformat()


class AssetFilterSerializer(serializers.Serializer):
    caption = serializers.CharField(required=False, allow_blank=True, max_length=MAX_FILTER_LENGTH, validators=[_text],
                                    help_text="words the caption contains (all of them)")
    created_after = DateOrDateTimeField(required=False, help_text="ISO date or datetime")
    created_before = DateOrDateTimeField(required=False, help_text="ISO date or datetime")
    model = serializers.CharField(required=False, allow_blank=True, max_length=100, validators=[_text],
                                  help_text="model version name")


DATE_OR_DATETIME = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}
ASSET_FILTERS = [
    OpenApiParameter("caption", {"type": "string", "maxLength": MAX_FILTER_LENGTH, "pattern": NO_NULL_PATTERN},
                     description="words the caption contains (all of them)"),
    OpenApiParameter("created_after", DATE_OR_DATETIME, description="ISO date (2026-01-31) or datetime with offset"),
    OpenApiParameter("created_before", DATE_OR_DATETIME, description="ISO date or datetime with offset"),
    OpenApiParameter("model", {"type": "string", "maxLength": 100, "pattern": NO_NULL_PATTERN},
                     description="model version name"),
]
ASSET_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="the asset's public id")


def _revocation(asset: Asset, *, with_reason: bool = True) -> Gone:
    """410 for a revoked asset. The reviewer's reason goes only to those who signed in or hold a
    key: a signed URL's holder may be anyone (a browser, a CDN, whoever the link was passed to)."""
    reason, revoked_at = services.revocation_of(asset)
    return Gone("This asset was revoked and may no longer be used.", reason=reason if with_reason else "",
                revoked_at=revoked_at.isoformat() if revoked_at else None)


class PrivateAnswers:
    """Every answer of the API is for the one key or session that asked: captions, manifests, and
    signed URLs that download without a key for minutes. A shared cache (a proxy, a CDN set to
    cache /api/) must never keep one and hand it to someone else, or serve a manifest after its
    asset was revoked: ``private, no-store`` and ``Vary`` on both credentials. Files set their own
    (``private, no-cache`` with an ETag, so a client revalidates), which is left as it is."""

    def finalize_response(self, request, response, *args: Any, **kwargs: Any):
        response = super().finalize_response(request, response, *args, **kwargs)
        if not response.has_header("Cache-Control"):
            patch_cache_control(response, private=True, no_store=True)
        patch_vary_headers(response, ("Authorization", "Cookie"))
        return response


@extend_schema_view(
    list=extend_schema(summary="Approved assets, newest approval first", parameters=ASSET_FILTERS,
                       responses=responses({200: AssetSerializer(many=True)}, 400, 404)),
    retrieve=extend_schema(summary="One approved asset", parameters=[ASSET_ID],
                           responses=responses({200: AssetSerializer}, 404, 410)),
)
class AssetViewSet(PrivateAnswers, viewsets.GenericViewSet):
    """Approved assets only: pending and rejected assets are 404 (never listed or served), revoked
    ones 410 Gone with the reason."""

    serializer_class = AssetSerializer
    permission_classes = [ScopeAndModelPermission]
    required_scopes = {"*": Scope.READ_ASSETS}
    required_perms = {"*": ("stackgan_django.view_asset",)}
    throttle_scope = "assets"
    pagination_class = Pagination
    lookup_field = "public_id"
    lookup_url_kwarg = "id"

    def get_queryset(self):
        # The stored verification report and the model's config are large JSON the API never shows.
        return (Asset.objects.select_related("request__model_version")
                .defer("provenance", "request__model_version__config"))

    def filtered_queryset(self):
        filters = AssetFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        params = filters.validated_data
        queryset = self.get_queryset().filter(state=Asset.State.APPROVED).order_by("-decided_at", "-pk")
        for word in params.get("caption", "").split()[:10]:
            queryset = queryset.filter(request__caption__icontains=word)
        if "created_after" in params:
            queryset = queryset.filter(created_at__gte=params["created_after"])
        if "created_before" in params:
            queryset = queryset.filter(created_at__lt=params["created_before"])
        if params.get("model"):
            queryset = queryset.filter(request__model_version__name=params["model"])
        return queryset

    def get_object(self) -> Asset:
        """The approved asset, 410 for a revoked one, 404 for anything else (a malformed id too)."""
        try:
            public_id = uuid.UUID(str(self.kwargs.get("id", "")))
        except ValueError:
            raise NotFound("No approved asset has this id.") from None
        asset = self.get_queryset().filter(public_id=public_id).first()
        if asset is None or asset.state in (Asset.State.PENDING_REVIEW, Asset.State.REJECTED):
            raise NotFound("No approved asset has this id.")
        if asset.state == Asset.State.REVOKED:
            raise _revocation(asset)
        self.check_object_permissions(self.request, asset)
        return asset

    def list(self, request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.filtered_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request, *args: Any, **kwargs: Any) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(summary="The approved, signed file (PNG carrying both C2PA manifests)", parameters=[
        ASSET_ID,
        OpenApiParameter("If-None-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, description="ETag(s) you hold: 304"),
        OpenApiParameter("If-Modified-Since", OpenApiTypes.STR, OpenApiParameter.HEADER, description="HTTP date: 304"),
        OpenApiParameter("If-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, description="ETag(s): 412 if none match"),
    ], responses=responses({
        (200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, description="the file; ETag is its SHA-256"),
        304: OpenApiResponse(description="Not modified (your ETag or date is current)."),
        412: OpenApiResponse(description="If-Match or If-Unmodified-Since did not hold."),
    }, 404, 410))
    @action(detail=True, methods=["get"], url_path="file")
    def file(self, request, *args: Any, **kwargs: Any) -> HttpResponse:
        asset = self.get_object()
        return file_response(request._request, asset, approved_file=True)

    @extend_schema(summary="The file's C2PA manifest store as JSON", parameters=[ASSET_ID],
                   responses=responses({200: OpenApiResponse(
                       inline_serializer("ManifestStore", fields={
                           "active_manifest": serializers.CharField(),
                           "manifests": serializers.DictField(child=serializers.DictField())}),
                       description="c2pa's manifest store: the review manifest and its parent, the generation manifest")},
                       404, 410))
    @action(detail=True, methods=["get"], url_path="manifest")
    def manifest(self, request, *args: Any, **kwargs: Any) -> Response:
        from stackgan_django.provenance import read_manifest_store

        asset = self.get_object()
        try:
            with asset.approved_file.open("rb") as handle:
                data = handle.read()
        except (OSError, ValueError) as exc:  # as the file/ action: a missing file is 404, never a 500
            raise NotFound("The asset's file is missing from storage.") from exc
        if hashlib.sha256(data).hexdigest() != asset.approved_sha256:  # as the file/ action: written over
            raise NotFound("The file in storage does not match the asset's record.")
        store = read_manifest_store(data)
        if store is None:
            raise NotFound("The file carries no readable manifest.")
        return Response(store)


class SignedFileView(PrivateAnswers, APIView):
    """A signed, short-lived URL: no key needed, but the asset must still be approved now."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_scope = "files"
    throttle_anonymous_by_scope = True

    @extend_schema(summary="Download through a signed URL (from an asset's signed_url)", auth=[],
                   parameters=[OpenApiParameter("token", OpenApiTypes.STR, OpenApiParameter.PATH)],
                   responses={(200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY),
                              304: OpenApiResponse(description="Not modified."),
                              412: OpenApiResponse(description="Precondition failed."),
                              403: _error("The signed URL is invalid or has expired."),
                              404: _error("No approved asset."), 410: GONE, 406: COMMON_ERRORS[406],
                              429: COMMON_ERRORS[429]})
    def get(self, request, token: str) -> HttpResponse:
        try:
            asset, claims = asset_from_signed_token(token)
        except BadSignedUrl as exc:
            raise PermissionDenied(str(exc)) from exc
        if asset is None or asset.state in (Asset.State.PENDING_REVIEW, Asset.State.REJECTED):
            raise NotFound("No approved asset.")
        if asset.state == Asset.State.REVOKED:
            raise _revocation(asset, with_reason=False)
        if asset.approved_sha256[:SIGNED_HASH_LENGTH] != claims["h"]:
            raise NotFound("The file this URL was signed for is no longer served.")
        return file_response(request._request, asset, approved_file=True)


# -- requests ---------------------------------------------------------------------------------------

class RequestAssetSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    state = serializers.ChoiceField(choices=Asset.State.choices)


class RefusalSerializer(serializers.Serializer):
    rule_id = serializers.CharField()
    category = serializers.CharField(help_text="the policy category the rule is about; empty when it names none")
    message = serializers.CharField(help_text="why, in words")


class StrictCharField(serializers.CharField):
    """A JSON string and nothing else: DRF's CharField turns 5 into "5", a caption nobody wrote."""

    default_error_messages = {"not_a_string": "Send a JSON string, not {kind}."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_a_string", kind=_json_kind(data))
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer and nothing else: DRF's IntegerField also takes "3" and 2.0 (and True is a
    Python int). A number too long to convert gets the range message, as any number past it does."""

    default_error_messages = {"not_an_integer": "Send a JSON integer (a whole number, no quotes or decimal point), not {kind}.",
                              "out_of_range": "The number is out of range."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, OversizedInteger):
            if data.negative and self.min_value is not None:
                self.fail("min_value", min_value=self.min_value)
            if not data.negative and self.max_value is not None:
                self.fail("max_value", max_value=self.max_value)
            self.fail("out_of_range")
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("not_an_integer", kind=_json_kind(data))
        return super().to_internal_value(data)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return f"the number {value}"
    return {dict: "an object", list: "an array"}.get(type(value), "another type")


class RequestSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    caption = StrictCharField(trim_whitespace=False, validators=[_text, RegexValidator(
        CAPTION_PATTERN, "Type a caption describing the image you want (no null characters).")],
        help_text="what to draw; checked against the usage policy")
    num_images = StrictIntegerField(default=4)
    seed = StrictIntegerField(required=False, allow_null=True, default=None,
                              help_text="image i uses seed + i; empty for a random seed")
    purpose = StrictCharField(max_length=50, default="editorial", trim_whitespace=False, validators=[
        _text, RegexValidator(NO_NULL_PATTERN, "Null characters are not allowed.")])
    refused_because = serializers.SerializerMethodField()
    assets = serializers.SerializerMethodField()

    class Meta:
        model = GenerationRequest
        fields = ["id", "caption", "num_images", "seed", "purpose", "state", "flagged", "created_at",
                  "finished_at", "refused_because", "assets"]
        read_only_fields = ["state", "flagged", "created_at", "finished_at"]

    def get_fields(self) -> dict[str, serializers.Field]:
        # Bounds come from the settings, so the schema and the checks always agree with them.
        fields = super().get_fields()
        fields["caption"].max_length = app_settings.MAX_CAPTION_LENGTH
        fields["caption"].validators.append(_max_length_validator(app_settings.MAX_CAPTION_LENGTH))
        fields["num_images"].min_value, fields["num_images"].max_value = 1, app_settings.MAX_IMAGES_PER_REQUEST
        fields["seed"].min_value, fields["seed"].max_value = 0, app_settings.MAX_SEED
        for name, validator in (("num_images", _range_validator(1, app_settings.MAX_IMAGES_PER_REQUEST)),
                                ("seed", _range_validator(0, app_settings.MAX_SEED))):
            fields[name].validators.append(validator)
        return fields

    @extend_schema_field(RefusalSerializer(many=True))
    def get_refused_because(self, obj: GenerationRequest) -> list[dict[str, str]]:
        """What the requester may learn: no scores, thresholds or nearest examples, which would let a
        client search for captions just under a threshold (stackgan_django.disclosure)."""
        return [requester_decision(d.rule_id, d.message, d.evidence) for d in obj.decisions.filter(outcome="deny")]

    @extend_schema_field(RequestAssetSerializer(many=True))
    def get_assets(self, obj: GenerationRequest) -> list[dict[str, str]]:
        return [{"id": str(a.public_id), "state": a.state} for a in obj.assets.all()]


def _max_length_validator(limit: int):
    from django.core.validators import MaxLengthValidator

    return MaxLengthValidator(limit)


def _range_validator(low: int, high: int):
    from django.core.validators import MaxValueValidator, MinValueValidator

    lower, upper = MinValueValidator(low), MaxValueValidator(high)

    def check(value: Any) -> None:
        if value is not None:
            lower(value)
            upper(value)

    return check


@extend_schema_view(
    create=extend_schema(summary="Ask for images (answered at once; poll the request for the result)",
                         parameters=[OpenApiParameter(
                             "Idempotency-Key", {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN, "minLength": 1,
                                                 "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH},
                             OpenApiParameter.HEADER, required=False,
                             description="Up to 255 visible ASCII characters (a UUID): a POST sent again with the "
                                         "same key answers with the request the first made (header Idempotent-Replayed: "
                                         "true) instead of asking twice; with another body it is 409.")],
                         responses=responses({202: RequestSerializer, 422: OpenApiResponse(
                             RequestSerializer, description="Refused by the usage policy: refused_because says why.")},
                             400, 409, 413, 415, 503)),
    retrieve=extend_schema(summary="One of your requests", parameters=[
        OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH)], responses=responses({200: RequestSerializer}, 404)),
    list=extend_schema(summary="Your requests, newest first", responses=responses({200: RequestSerializer(many=True)}, 400, 404)),
)
class GenerationRequestViewSet(PrivateAnswers, mixins.CreateModelMixin, mixins.RetrieveModelMixin, mixins.ListModelMixin,
                               viewsets.GenericViewSet):
    """Ask for images and poll for the result. A caption the usage policy refuses is answered 422
    with the rules and messages; bad input is 400."""

    serializer_class = RequestSerializer
    permission_classes = [ScopeAndModelPermission]
    required_scopes = {"*": Scope.REQUEST_IMAGES}
    required_perms = {"POST": ("stackgan_django.add_generationrequest",)}

    @property
    def throttle_scope(self) -> str:
        # Polling for the result is a read, counted apart from asking: under one allowance, a client
        # polling as the README says used up its 30 requests a minute and could ask for nothing more
        # (nor could its user's admin form, which shares the allowance).
        return "requests" if self.request.method not in SAFE_METHODS else "request_status"
    # JSON only, whatever the host's defaults: the strict types above assume JSON's own types.
    parser_classes = [BoundedJSONParser]
    pagination_class = Pagination
    lookup_field = "public_id"
    lookup_url_kwarg = "id"

    def get_queryset(self):
        return (GenerationRequest.objects.filter(requested_by=self.request.user).order_by("-created_at", "-pk")
                .prefetch_related("assets", "decisions"))

    def get_object(self) -> GenerationRequest:
        try:
            public_id = uuid.UUID(str(self.kwargs.get("id", "")))
        except ValueError:
            raise NotFound("You have no request with this id.") from None
        found = self.get_queryset().filter(public_id=public_id).first()
        if found is None:
            raise NotFound("You have no request with this id.")
        return found

    def create(self, request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        fields = {"caption": data["caption"], "num_images": data["num_images"], "seed": data.get("seed"),
                  "purpose": data["purpose"], "user": request.user}
        key = request.headers.get("Idempotency-Key")
        replayed = False
        if key is None:
            created = services.submit_request(**fields)
        else:
            try:
                created, is_new = services.submit_idempotent(key, **fields)
            except services.IdempotencyKeyReused as exc:
                return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
            replayed = not is_new
        code = status.HTTP_422_UNPROCESSABLE_ENTITY if created.state == GenerationRequest.State.POLICY_DENIED \
            else status.HTTP_202_ACCEPTED
        response = Response(self.get_serializer(created).data, status=code)
        if replayed:
            response["Idempotent-Replayed"] = "true"  # the answer to the first POST with this key, again
        return response


# -- verification -----------------------------------------------------------------------------------

FILE_HELP = ("What this file is, apart from the state of the asset it came from: `approved file` (byte for byte a "
             "file of an approved asset: the only one that may be published as the asset), `derived copy` (found "
             "by the watermark of an approved asset, but not its file: re-encoded, resized or altered, with no "
             "provenance of ours), `not approved` (the file or a copy of an asset that is not approved), "
             "`unconfirmed` (a mark of ours on a picture that is not the asset's), `not ours`.")
ASSET_HELP = ("The asset of ours the file comes from (null: none). `asset.state` is the asset's state, not this "
              "file's: a derived copy names the approved asset it came from (see `file`). Also `public_id`, "
              "`found_by` (`file hash` or `watermark`), `exact_file`; `id` and `request_id` for reviewers only.")


class VerifySerializer(serializers.Serializer):
    file = serializers.FileField(help_text="PNG, JPEG or WebP; size and pixel limits in the 413 answer")


class VerifyView(PrivateAnswers, APIView):
    """Upload any image: C2PA validation, our watermark, and the asset it came from. What it says
    about an asset that is not approved is reported only to compliance staff."""

    permission_classes = [ScopeAndModelPermission]
    required_scopes = {"*": Scope.VERIFY}
    # As the admin's "Check a file" page: what the answer says of our assets is for those who may
    # view assets (an attacker's probe found a key of a user with no permission at all answered).
    required_perms = {"*": ("stackgan_django.view_asset",)}
    throttle_scope = "verify"
    parser_classes = [MultiPartParser]

    @classmethod
    def body_limit(cls) -> int:
        """The middleware refuses a larger body from its Content-Length before the view reads it."""
        return app_settings.VERIFY_MAX_BYTES + MULTIPART_ENVELOPE_BYTES  # the file plus the multipart envelope

    @extend_schema(summary="Is this file ours, approved, unaltered?",
                   request={"multipart/form-data": VerifySerializer},
                   responses=responses({200: OpenApiResponse(inline_serializer("VerificationReport", fields={
                       "state": serializers.CharField(help_text="C2PA validation of the file's manifest: Trusted, "
                                                                "Valid, Invalid, No manifest, Not an image"),
                       "message": serializers.CharField(),
                       "sha256": serializers.CharField(),
                       "file": serializers.ChoiceField(choices=services.FILE_VERDICTS, help_text=FILE_HELP),
                       "file_message": serializers.CharField(help_text="What `file` means for this file, in a sentence."),
                       "asset": serializers.DictField(allow_null=True, help_text=ASSET_HELP),
                       "watermark": serializers.DictField(), "manifests": serializers.ListField(child=serializers.DictField()),
                   }))}, 400, 413, 415))
    def post(self, request) -> Response:
        serializer = VerifySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        upload = serializer.validated_data["file"]
        try:
            check_image_header(upload)
        except ImageRefused as exc:
            if exc.status_code == status.HTTP_413_REQUEST_ENTITY_TOO_LARGE:
                raise PayloadTooLarge({"file": [str(exc)]}) from exc
            raise ValidationError({"file": [str(exc)]}) from exc
        return Response(services.verify_file(upload.read(), disclose_unapproved=can_see_unapproved(request.user)))

