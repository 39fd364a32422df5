"""Serving: verified model loading, routing, and the HTTP gateway (``rung serve``)."""
