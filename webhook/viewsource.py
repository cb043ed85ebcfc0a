"""Where the webhook's read-only cluster view comes from.

`ViewSource` is the seam between the HTTP layer and the cluster: the app asks it for
the current view on every request and for readiness on `/readyz`. Today the only
implementation is `StaticViewSource`, an in-memory view built from state files; a
live watch cache (in `cluster/`) implements the same two methods later. A live source
must start its watches in the worker process (after gunicorn forks): if it defines
`start()`, the server calls it once per worker before serving.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from policies.view import ClusterView


@runtime_checkable
class ViewSource(Protocol):
    def view(self) -> ClusterView:
        """The view to decide the current request from (cheap: called per request)."""

    def ready(self) -> tuple[bool, str]:
        """Whether the view is synced, and a one-line reason for `/readyz`."""


class StaticViewSource:
    """A fixed view, ready from the start (state files, or empty)."""

    def __init__(self, view: ClusterView, description: str = "state files") -> None:
        self._view = view
        self._description = description

    def view(self) -> ClusterView:
        return self._view

    def ready(self) -> tuple[bool, str]:
        total = sum(self._view.counts().values())
        return True, f"static view from {self._description}: {total} objects"
