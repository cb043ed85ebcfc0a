"""Fixtures for the chart and `certs maintain` tests: the Kubernetes API test server of
`tests/kubeapi` (`kubeapi`), which `certs maintain` talks to through the real client."""

from __future__ import annotations

from tests.kubeapi.conftest import kubeapi  # noqa: F401  (a fixture, used by name)
