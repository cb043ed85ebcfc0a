"""Fixtures for the audit tests: the fake Kubernetes API server of `tests/kubeapi`
(`kubeapi`) for the live-cluster tests."""

from __future__ import annotations

from tests.kubeapi.conftest import kubeapi  # noqa: F401  (a fixture, used by name)
