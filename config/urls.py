from django.contrib import admin
from django.urls import include, path

from stackgan_django.throttling import throttled_login

urlpatterns = [
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
