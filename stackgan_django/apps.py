from django.apps import AppConfig


class StackGANConfig(AppConfig):
    name = "stackgan_django"
    verbose_name = "StackGAN image generation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from stackgan_django import checks  # noqa: F401  (registers the system checks)
        from stackgan_django.conf import connect_signals

        connect_signals()
