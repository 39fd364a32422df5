"""Reading ``rung.yaml``: finding it, layering the environment and overrides on it, and one-line errors.

Precedence, highest first: a CLI flag (``overrides``) > the environment
(``RUNG_DATABASE_URL``, ``RUNG_TRACKING_URI``, ``RUNG_EXECUTOR``,
``RUNG_RAY_ADDRESS``, ``RUNG_GRPC_PORT``, ``RUNG_ARTIFACTS_URI``, ``RUNG_REPLICA``,
``RUNG_REQUEST_LOG_URI``) > ``rung.yaml`` > the defaults of the models.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rung.config.project import Settings
from rung.errors import ConfigError

__all__ = ["PROJECT_FILE", "find_project_root", "load_settings"]

PROJECT_FILE = "rung.yaml"


def find_project_root(start: Path | None = None) -> Path | None:
    """The nearest directory at or above ``start`` holding a ``rung.yaml``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / PROJECT_FILE).is_file():
            return candidate
    return None


def load_settings(root: Path, overrides: dict[str, Any] | None = None) -> Settings:
    """Read ``root/rung.yaml``, apply the environment and ``overrides``, validate."""
    import yaml

    path = root / PROJECT_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; create one with `rung init NAME`") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{PROJECT_FILE}:{where}: {problem}; fix the YAML syntax") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{PROJECT_FILE}: expected a mapping of keys (name: ..., task: ...), got {type(raw).__name__}")
    raw = _apply_environment(raw)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _apply_environment(raw: dict[str, Any]) -> dict[str, Any]:
    raw = dict(raw)
    env = os.environ
    if env.get("RUNG_DATABASE_URL"):
        _set_dotted(raw, "store.database_url", env["RUNG_DATABASE_URL"])
    if env.get("RUNG_TRACKING_URI"):
        _set_dotted(raw, "tracking.uri", env["RUNG_TRACKING_URI"])
    if env.get("RUNG_EXECUTOR"):
        _set_dotted(raw, "executor", _executor_dict(raw) | {"kind": env["RUNG_EXECUTOR"]})
    if env.get("RUNG_RAY_ADDRESS"):
        _set_dotted(raw, "executor", _executor_dict(raw) | {"address": env["RUNG_RAY_ADDRESS"]})
    if env.get("RUNG_GRPC_PORT"):
        _set_dotted(raw, "serve.grpc_port", env["RUNG_GRPC_PORT"])
    if env.get("RUNG_ARTIFACTS_URI"):
        _set_dotted(raw, "artifacts.uri", env["RUNG_ARTIFACTS_URI"])
    if env.get("RUNG_REQUEST_LOG_URI"):  # it replaces rung.yaml's uri, or path (the old name of the setting)
        _set_dotted(raw, "monitor.request_log.path", None)
        _set_dotted(raw, "monitor.request_log.uri", env["RUNG_REQUEST_LOG_URI"])
    if env.get("RUNG_REPLICA"):
        _set_dotted(raw, "serve.replica", env["RUNG_REPLICA"])
    return raw


def _executor_dict(raw: dict[str, Any]) -> dict[str, Any]:
    current = raw.get("executor") or {}
    return {"kind": current} if isinstance(current, str) else dict(current)


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
        node[key] = child = dict(child)
        node = child
    node[leaf] = value


def _describe(exc: ValidationError) -> str:
    """One line per problem (the first is what the user fixes first)."""
    lines = []
    for error in exc.errors():
        union_tags = {"str", "SqlSource"}  # pydantic names the union member it tried; the user needs the key
        loc = ".".join(str(p) for p in error["loc"] if str(p) not in union_tags and not str(p).startswith("function-"))
        kind = error["type"]
        given = error.get("input")
        if kind == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            choices = expected.replace("'", "").replace(" or ", ", ")
            lines.append(f"{PROJECT_FILE}: {loc}: {given!r} is not one of {choices}")
        elif kind == "extra_forbidden":
            lines.append(f"{PROJECT_FILE}: {loc}: unknown key; remove it or check its spelling (see docs/configuration.md)")
        elif kind == "missing":
            lines.append(f"{PROJECT_FILE}: {loc}: required key is missing")
        elif isinstance(given, (dict, list)):  # a whole section: it may hold a secret (a webhook URL), and the key says where
            lines.append(f"{PROJECT_FILE}: {loc}: {error['msg']}")
        else:
            lines.append(f"{PROJECT_FILE}: {loc}: {error['msg']} (got {given!r})")
    return lines[0] if len(lines) == 1 else lines[0] + f" (and {len(lines) - 1} more: " + "; ".join(lines[1:]) + ")"
