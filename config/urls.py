from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from stackgan_django.throttling import throttled_login

urlpatterns = [
    # The demo has no public site: "/" and the admin's "View site" lead to the admin, not a 404.
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    # Failed log-ins are counted per address and per username; past the limit, 429 (issue 11).
    path("admin/login/", throttled_login(admin.site.login), name="throttled-admin-login"),
    path("admin/", admin.site.urls),
    path("api/", include("stackgan_django.urls")),
]
# No route serves MEDIA_ROOT or the private storage, in development either: generated files leave
# only through the API's authorised views (stackgan_django.files).

# JSON under /api/, Django's pages elsewhere.
handler400 = "stackgan_django.api_errors.handler400"
handler403 = "stackgan_django.api_errors.handler403"
handler404 = "stackgan_django.api_errors.handler404"
handler500 = "stackgan_django.api_errors.handler500"
