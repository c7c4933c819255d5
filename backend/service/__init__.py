"""The HTTP service: Label Studio ML protocol handlers and their request checks, gunicorn
settings, WSGI entry."""
