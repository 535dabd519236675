"""The host project that runs stackgan_django for the demo and the tests. A real site replaces it."""

from config.celery import app as celery_app

__all__ = ["celery_app"]
