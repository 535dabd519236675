import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_wsgi_application()

# gunicorn runs no system checks: refuse to serve on what `manage.py check` reports as
# stackgan_django.E004 (DEBUG off with the published development SECRET_KEY).
from stackgan_django.checks import refuse_development_secret_key  # noqa: E402

refuse_development_secret_key()
