"""The WSGI entry point for gunicorn."""

from backend.service.app import create_app

app = create_app()
