"""The entra-guard demo API (``uvicorn sample_app.main:app``)."""
