"""Model flavours: which MLflow flavour a trained object is logged with, and how registered files predict again.

scikit-learn (via skops), XGBoost and LightGBM are loaded natively, because
calling the estimator directly is several times faster than going through
``pyfunc``. PyTorch modules, ONNX graphs and MLflow ``PythonModel`` s get a
predictor (:mod:`rung.models.predictors`) that gives them scikit-learn's
``predict`` / ``predict_proba`` / ``classes_``; :func:`adapt` wraps the
trained object for evaluation and :func:`load_native` wraps the registered
files for certification and serving with the *same* predictor classes, so
a version is judged on the answers it will serve. Any other MLflow flavour
(a model registered elsewhere: TensorFlow, a pickled scikit-learn model)
is served through its ``python_function`` flavour. A new flavour goes in
:func:`detect_flavor`, :func:`adapt`, :func:`load_native` and
``Tracking._log_model``.

Which flavours deserialise with pickle (and so run code from the file when
loaded) is :data:`PICKLED`: ``rung models`` marks those versions.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rung.errors import IntegrityError, RungError
from rung.models.signature import Column
from rung.skops_io import skops_io

__all__ = ["PICKLED", "RUNTIMES", "SUPPORTED", "adapt", "detect_flavor", "load_native", "read_mlmodel", "read_signature"]

SUPPORTED = ("scikit-learn, XGBoost, LightGBM, PyTorch (a torch.nn.Module), ONNX (an onnx.ModelProto) and "
             "MLflow python_function (an mlflow.pyfunc.PythonModel)")

# Flavours whose files are unpickled when loaded: PyTorch modules (torch.save) and python_function
# models (cloudpickle). skops (scikit-learn), XGBoost JSON/UBJ, LightGBM text and ONNX protobuf are data.
PICKLED = frozenset({"pytorch", "pyfunc"})

# The library each flavour's models predict with. A gateway's worker processes import it once, in the fork
# server (rung.serving.worker): a PyTorch model pickles its module as bytes, which name nothing to import.
RUNTIMES = {"sklearn": "sklearn", "xgboost": "xgboost", "lightgbm": "lightgbm", "pytorch": "torch", "onnx": "onnxruntime",
            "pyfunc": "mlflow.pyfunc"}


def detect_flavor(model: Any) -> str:
    """The MLflow flavour rung logs ``model`` with; :class:`RungError` naming what is supported otherwise.

    Frameworks are recognised without importing them: a model of a library
    that is not imported cannot be one of its objects.
    """
    module = type(model).__module__
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "pytorch"
    onnx = sys.modules.get("onnx")
    if onnx is not None and isinstance(model, onnx.ModelProto):
        return "onnx"
    if isinstance(model, (bytes, bytearray)) and _is_onnx(bytes(model)):
        return "onnx"
    pyfunc = sys.modules.get("mlflow.pyfunc")
    if pyfunc is not None and isinstance(model, pyfunc.PythonModel):
        return "pyfunc"
    if module.startswith("xgboost"):
        return "xgboost"
    if module.startswith("lightgbm"):
        return "lightgbm"
    if hasattr(model, "predict") and hasattr(model, "fit"):
        return "sklearn"
    raise RungError(f"cannot register a {type(model).__name__}: rung registers {SUPPORTED} models; "
                    "return one of those from the train step")


def _is_onnx(data: bytes) -> bool:
    try:
        import onnx
    except ImportError:
        return False
    try:
        proto = onnx.ModelProto.FromString(data)
    except Exception:
        return False
    return bool(proto.graph.node) and bool(proto.graph.output)


def adapt(model: Any, flavor: str, *, task: str, classes: list[Any]) -> Any:
    """An object with scikit-learn's ``predict`` (and, for classifiers, ``predict_proba`` and ``classes_``) over features.

    The native flavours already are one; PyTorch, ONNX and ``PythonModel``
    get the predictor :func:`load_native` will give their registered files.
    """
    from rung.models.predictors import OnnxBackend, PyfuncBackend, TorchBackend, make_predictor

    if flavor == "pytorch":
        return make_predictor(TorchBackend.trained(model), task=task, classes=classes)
    if flavor == "onnx":
        return make_predictor(OnnxBackend.from_model(model), task=task, classes=classes)
    if flavor == "pyfunc":
        return make_predictor(PyfuncBackend(python_model=model), task=task, classes=classes)
    return model


def read_mlmodel(path: Path) -> dict[str, Any]:
    import yaml

    try:
        return yaml.safe_load((path / "MLmodel").read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RungError(f"{path}: no readable MLmodel file ({exc})") from exc


def load_native(path: Path, meta: dict[str, Any], ref: str, *, task: str, device: str = "cpu") -> tuple[Any, str]:
    """The predictor of the verified files at ``path`` (``meta``: their MLmodel file) and its flavour's name.

    ``task`` is the project's unless the MLmodel file says (``metadata.rung``);
    a classifier's classes come from there too (a model registered elsewhere
    has none: its classes are the indices of its output columns). ``device``
    (``serve.device``) places PyTorch and ONNX Runtime models.
    """
    from rung.optional import require

    flavors = meta.get("flavors") or {}
    rung = (meta.get("metadata") or {}).get("rung") or {}
    task = str(rung.get("task") or task)
    classes = list(rung.get("classes") or [])
    try:
        if any(isinstance(conf, dict) and conf.get("serialization_format") == "skops" for conf in flavors.values()):
            skops_io()  # before MLflow imports it: without PyTorch (rung.skops_io)
        if "sklearn" in flavors:
            conf = flavors["sklearn"]
            if conf.get("serialization_format") == "skops":
                skops = skops_io()
                file = path / conf["pickled_model"]
                trusted = skops.get_untrusted_types(file=file)
                allowed = set(conf.get("skops_trusted_types") or [])
                unexpected = [t for t in trusted if t not in allowed]
                if unexpected:
                    raise IntegrityError(f"{ref}: the model file holds types not trusted at registration: {unexpected[:3]}")
                return skops.load(file, trusted=trusted), "sklearn"
            import mlflow.sklearn  # pickle or cloudpickle (MLflow's default before skops): files verified by sha256 first

            return mlflow.sklearn.load_model(str(path)), "sklearn"
        if "xgboost" in flavors:
            import mlflow.xgboost

            require("xgboost", purpose=f"{ref} (an XGBoost model)")

            return mlflow.xgboost.load_model(str(path)), "xgboost"
        if "lightgbm" in flavors:
            import mlflow.lightgbm

            require("lightgbm", purpose=f"{ref} (a LightGBM model)")

            return mlflow.lightgbm.load_model(str(path)), "lightgbm"
        from rung.models.predictors import OnnxBackend, PyfuncBackend, TorchBackend, make_predictor, resolve_device

        if "pytorch" in flavors:
            require("torch", purpose=f"{ref} (a PyTorch model)")
            import mlflow.pytorch

            module = mlflow.pytorch.load_model(str(path), map_location="cpu")
            backend: Any = TorchBackend(module, device=resolve_device(device, "torch"))
            return make_predictor(backend, task=task, classes=classes), "pytorch"
        if "onnx" in flavors:
            require("onnxruntime", purpose=f"{ref} (an ONNX model)")
            file = path / str(flavors["onnx"].get("data") or "model.onnx")
            backend = OnnxBackend.from_file(file, root=path, device=resolve_device(device, "onnxruntime"))
            return make_predictor(backend, task=task, classes=classes), "onnx"
        unwrap = (flavors.get("python_function") or {}).get("loader_module") == "mlflow.pyfunc.model"
        backend = PyfuncBackend.from_path(path, unwrap=unwrap)
        return make_predictor(backend, task=task, classes=classes), "pyfunc"
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
