"""What a change list of this app accepts from a URL or a form: the filters it shows (nothing more),
and for an action only row ids its model can have. Shared by every ModelAdmin of the app."""

from __future__ import annotations

from typing import Any

from django.contrib.admin import FieldListFilter, ListFilter, SimpleListFilter, helpers, widgets
from django.contrib.admin.utils import get_fields_from_path
from django.core.exceptions import ValidationError
from django.db.models import Field, QuerySet
from django.http import HttpRequest, HttpResponseBadRequest
from django.http.response import HttpResponseBase

# The query-string parts a date hierarchy adds after the field name.
DATE_HIERARCHY_PARTS = ("year", "month", "day")
# Django turns the hierarchy's numbers into a datetime and catches only ValueError: a year of eleven
# digits raised OverflowError there (a 500). Four digits are as many as any of the three needs.
MAX_DATE_PART_DIGITS = 4
# Enough of a refused value to recognise it in the message, not a page of it.
SHOWN_VALUE_CHARS = 40


class GuardedChangeListMixin:
    """Django's change list filters by any lookup on the model's fields that a query string names
    (``?caption__regex=...``, ``?data__contains=...``, ``?pk__in=...``). On SQLite a regular
    expression runs in Python holding the GIL, so one crafted URL froze the whole web process;
    out-of-range numbers and bad patterns were 500s. Here a change list accepts only the
    parameters its own list filters and date hierarchy produce, plus ``allowed_extra_lookups``;
    anything else is Django's DisallowedModelAdminLookup, a 400, before any query runs. An action
    runs only on a selection of values that can be primary keys of the model; else a 400."""

    # Query-string names this change list accepts besides those of its list filters: parameters our
    # own pages link to, or a filter's name that get_list_filter shows to some users only.
    allowed_extra_lookups: tuple[str, ...] = ()

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        if "\x00" in str(value):
            # PostgreSQL refuses NUL in any text value (a 500); no filter's link carries one.
            return False
        if lookup not in self.offered_lookups(request):
            return self._is_raw_id_popup_lookup(lookup, value)
        if not self._is_date_hierarchy_value(lookup, value):
            return False
        return super().lookup_allowed(lookup, value, request)

    def offered_lookups(self, request: HttpRequest | None) -> frozenset[str]:
        """The query-string names the change list's filters, date hierarchy and links produce."""
        if request is None:
            return self._offered_lookups(request)
        # lookup_allowed asks once per parameter value; building field filters may query choices.
        cache = request.__dict__.setdefault("_stackgan_offered_lookups", {})
        if self not in cache:
            cache[self] = self._offered_lookups(request)
        return cache[self]

    def _offered_lookups(self, request: HttpRequest | None) -> frozenset[str]:
        names = set(self.allowed_extra_lookups)
        list_filter = self.get_list_filter(request) if request is not None else self.list_filter
        for item in list_filter:
            if isinstance(item, type) and issubclass(item, SimpleListFilter):
                # Read from the class: building one runs its lookups(), often a query.
                names.add(item.parameter_name)
            elif isinstance(item, type) and issubclass(item, ListFilter):
                names.update(item(request, {}, self.model, self).expected_parameters())
            else:
                names.update(self._field_filter(item, request).expected_parameters())
        if self.date_hierarchy:
            names.update(f"{self.date_hierarchy}__{part}" for part in DATE_HIERARCHY_PARTS)
        return frozenset(names)

    def _field_filter(self, item: Any, request: HttpRequest | None) -> FieldListFilter:
        """The filter the change list builds for a field entry of list_filter (a field path, or a
        (field path, filter class) pair), built as ChangeList.get_filters builds it, with no values:
        its expected_parameters() are the names its links use (``state__exact``,
        ``created_at__gte``, ``requested_by__id__exact``, ``purpose__isnull``, ...)."""
        field, filter_class = item if isinstance(item, (list, tuple)) else (item, FieldListFilter.create)
        field_path = None
        if not isinstance(field, Field):
            field_path = field
            field = get_fields_from_path(self.model, field_path)[-1]
        return filter_class(field, request, {}, self.model, self, field_path=field_path)

    def _is_date_hierarchy_value(self, lookup: str, value: Any) -> bool:
        if not self.date_hierarchy or not lookup.startswith(f"{self.date_hierarchy}__"):
            return True
        text = str(value)
        return text.isascii() and text.isdigit() and len(text) <= MAX_DATE_PART_DIGITS

    def _is_raw_id_popup_lookup(self, lookup: str, value: Any) -> bool:
        # The one other thing Django's lookup_allowed lets through: the pop-up a raw-id widget opens,
        # filtered by its foreign key's limit_choices_to (exactly those names and values).
        for fk_lookup in self.model._meta.related_fkey_lookups:
            if callable(fk_lookup):
                fk_lookup = fk_lookup()
            if (lookup, value) in widgets.url_params_from_lookup_dict(fk_lookup).items():
                return True
        return False

    def response_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseBase | None:
        # Django filters pk__in on the posted ids as they come: "abc" or "1.5" raised ValueError and
        # a number past 64 bits OverflowError, each a 500. Only a tampered form sends them.
        malformed = self.malformed_selection(request.POST.getlist(helpers.ACTION_CHECKBOX_NAME))
        if malformed is not None:
            name = self.model._meta.verbose_name
            return HttpResponseBadRequest(
                f"The selection is not a list of {name} ids: {malformed[:SHOWN_VALUE_CHARS]!r} cannot be one. "
                "Reload the list, tick the items and choose the action again.",
                content_type="text/plain; charset=utf-8")
        return super().response_action(request, queryset)

    def malformed_selection(self, selected: list[str]) -> str | None:
        """The first selected value that cannot be a primary key of the model (not a number, out of
        the database's range, too long), or None when every one can."""
        primary_key = self.model._meta.pk
        for value in selected:
            try:
                primary_key.clean(value, None)
            except ValidationError:
                return value
        return None
