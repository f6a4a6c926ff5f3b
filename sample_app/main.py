"""ASGI entry point: ``uvicorn sample_app.main:app``."""

from .app import create_app

app = create_app()
