"""The HTTP service: Label Studio ML protocol handlers, gunicorn settings, WSGI entry."""
