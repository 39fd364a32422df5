"""``rung ui``: the operations dashboard in the browser (overview, model, monitoring, timeline, maturity).

``create_app(project)`` is the Starlette app; ``serve_ui`` runs it (``rung ui``)
and ``start_ui`` runs it in a thread beside the gateway (``rung up``).
"""

from __future__ import annotations

from rung.ui.server import serve_ui, start_ui

__all__ = ["serve_ui", "start_ui"]
