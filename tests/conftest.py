"""What every test shares: each starts with structlog's default configuration, so a test that
ran a command (which configures logging at WARNING) can't hide another test's info events from
``structlog.testing.capture_logs``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _default_logging() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
