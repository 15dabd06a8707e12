"""Shared fixtures. Service fixtures live in tests/support/services.py."""

from __future__ import annotations

pytest_plugins = ["tests.support.services"]
