"""rung.pipeline.cluster: the one place that connects to Ray, and what it says when it cannot."""

from __future__ import annotations

import sys

import pytest

from rung.errors import MissingDependency
from rung.pipeline.cluster import connect_ray


def test_a_ray_client_address_without_ray_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a user met: `ray://` with a Ray lacking its client packages. Now one line naming rung[ray], before any connect."""
    pytest.importorskip("ray")
    monkeypatch.setitem(sys.modules, "grpc", None)  # what `import grpc` meets when grpcio is not installed
    with pytest.raises(MissingDependency) as caught:
        connect_ray("ray://ray-head:10001", purpose="executor 'ray'")
    assert str(caught.value) == ("executor 'ray' at ray://ray-head:10001 needs ray[client], which is not installed: "
                                 "pip install 'rung[ray]'")


def test_without_ray_every_user_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependency, match=r"rung predict --executor ray needs ray, .* pip install 'rung\[ray\]'"):
        connect_ray(None, purpose="rung predict --executor ray")
