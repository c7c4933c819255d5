"""Fixtures shared by the end-to-end modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def manual_backend(start_backend, label_studio):
    """A backend that trains only on request, so the button's run is the only one (one
    per module: each module's projects start from a backend of their own)."""
    return start_backend(
        LABEL_STUDIO_URL=label_studio.url,
        LABEL_STUDIO_API_KEY=label_studio.token,
        TRAIN_AFTER_ANNOTATIONS="100000",
    )
