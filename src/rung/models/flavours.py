"""Model flavours: how the files of a registered version become an object that predicts.

The native flavour is loaded (scikit-learn via skops, XGBoost, LightGBM)
because calling the estimator directly is several times faster than going
through ``pyfunc``; any other MLflow flavour falls back to ``pyfunc``. A new
flavour goes in :func:`load_native`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rung.errors import IntegrityError, RungError
from rung.models.signature import Column

__all__ = ["load_native", "read_mlmodel", "read_signature"]


def read_mlmodel(path: Path) -> dict[str, Any]:
    import yaml

    try:
        return yaml.safe_load((path / "MLmodel").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RungError(f"{path}: no readable MLmodel file ({exc})") from exc


def load_native(path: Path, flavors: dict[str, Any], ref: str) -> tuple[Any, str]:
    from rung.optional import require

    try:
        if "sklearn" in flavors:
            conf = flavors["sklearn"]
            if conf.get("serialization_format") == "skops":
                import skops.io

                file = path / conf["pickled_model"]
                trusted = skops.io.get_untrusted_types(file=file)
                allowed = set(conf.get("skops_trusted_types") or [])
                unexpected = [t for t in trusted if t not in allowed]
                if unexpected:
                    raise IntegrityError(f"{ref}: the model file holds types not trusted at registration: {unexpected[:3]}")
                return skops.io.load(file, trusted=trusted), "sklearn"
        if "xgboost" in flavors:
            import mlflow.xgboost

            require("xgboost", purpose=f"{ref} (an XGBoost model)")

            return mlflow.xgboost.load_model(str(path)), "xgboost"
        if "lightgbm" in flavors:
            import mlflow.lightgbm

            require("lightgbm", purpose=f"{ref} (a LightGBM model)")

            return mlflow.lightgbm.load_model(str(path)), "lightgbm"
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(str(path)), "pyfunc"
    except RungError:
        raise
    except Exception as exc:
        raise RungError(f"{ref}: the model could not be loaded: {type(exc).__name__}: {exc}") from exc


def read_signature(meta: dict[str, Any]) -> list[Column]:
    import json

    raw = (meta.get("signature") or {}).get("inputs")
    if not raw:
        return []
    spec = json.loads(raw) if isinstance(raw, str) else raw
    return [Column(str(item.get("name")), str(item.get("type", "string"))) for item in spec if item.get("name") is not None]
