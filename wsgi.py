"""The WSGI entry point: ``gunicorn wsgi:app`` (see Procfile)."""

from mpbot.logs import setup_logging
from mpbot.web import create_app

setup_logging()
app = create_app()
