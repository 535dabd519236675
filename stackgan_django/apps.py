from django.apps import AppConfig


class StackGANConfig(AppConfig):
    name = "stackgan_django"
    verbose_name = "StackGAN image generation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from stackgan_django import checks  # noqa: F401  (registers the system checks)
        from stackgan_django.conf import connect_signals

        connect_signals()
        # Who may do what: users' flags, groups and permissions are audit events too.
        from stackgan_django.access_audit import connect_signals as connect_access_signals

        connect_access_signals()
        # API v1 (issue 11): failed admin log-ins counted for the throttle; the API key admin.
        from stackgan_django import admin_api_keys  # noqa: F401  (registers the ModelAdmin)
        from stackgan_django.throttling import connect_signals as connect_throttle_signals

        connect_throttle_signals()
        # Speed (issue 16): each worker process loads and warms the active model when it starts, so
        # the first request costs what the others cost.
        from stackgan_django.worker_start import connect_worker_warm_up

        connect_worker_warm_up()
