"""PyTorch, ONNX and MLflow ``python_function`` models behind scikit-learn's ``predict`` / ``predict_proba`` / ``classes_``.

Evaluation, certification, serving and monitoring ask every model the same
things over a frame of features. scikit-learn, XGBoost and LightGBM answer
natively; the models here get a predictor. The *same* predictor classes wrap
the object a training function returned (:func:`rung.models.flavours.adapt`,
used by evaluation) and the registered files (:func:`rung.models.flavours.load_native`,
used by certification and the gateway), so a version is judged on exactly
the answers it will serve.

The contract a model meets (``docs/own-project.md`` has runnable examples):

- **Inputs.** A PyTorch module, and an ONNX graph with one input, take the
  frame's columns as one matrix ``[n, k]`` in column order (the model's input
  columns after the prepare hook), as float32 (a module's own floating dtype,
  an ONNX input's declared type). An ONNX graph with one input per column
  (what skl2onnx makes of a ``ColumnTransformer``) gets each column by name
  as ``[n, 1]``. Text columns must be encoded, e.g. in the prepare hook.
- **Classifiers** output one score per class, logits or probabilities:
  rung applies a softmax to each row that does not already sum to 1. Output
  column ``i`` is ``classes[i]``, the sorted training labels, which rung
  stores in the MLmodel file (``metadata.rung.classes``). A single output
  column for two classes is P(positive), a probability in [0, 1] (a model
  that ends in a logit adds a sigmoid). ONNX classifiers from skl2onnx (a label output and a
  probabilities output, a ZipMap included) work as they are; a model that
  outputs only labels gets probabilities of 0 and 1.
- **Regressors** output one value per row.

Predictors pickle (the gateway sends a loaded version to its worker
processes): a PyTorch module and a ``PythonModel`` travel with cloudpickle
(classes defined in the team's own files travel by value); an ONNX Runtime
session, or an MLflow model loaded from its files, is built again in the
worker from the verified files, after their sha256 is checked once more.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rung.errors import ConfigError, IntegrityError, RungError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "Classifier",
    "OnnxBackend",
    "Output",
    "PyfuncBackend",
    "Regressor",
    "TorchBackend",
    "make_predictor",
    "resolve_device",
    "to_proba",
]

Device = Literal["auto", "cpu", "cuda"]


@dataclass
class Output:
    """What a model answered for a batch: scores ([n, k] or [n]) or labels ([n]); ``columns`` names score columns."""

    scores: np.ndarray | None = None
    labels: np.ndarray | None = None
    columns: list[Any] | None = None  # the class of each score column when the model says (a ZipMap, a frame)


# -- devices --------------------------------------------------------------------------------------


def resolve_device(requested: str, runtime: Literal["torch", "onnxruntime"]) -> str:
    """``serve.device`` for a runtime: ``auto`` is ``cuda`` when the runtime sees a GPU, else ``cpu``.

    ``cuda`` where the runtime sees none is a :class:`ConfigError`: a model
    that was asked to be on a GPU silently answering from the CPU is a
    capacity surprise at the worst moment.
    """
    if requested not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"serve.device: {requested!r}: write auto, cpu or cuda", field="serve.device")
    if requested == "cpu":
        return "cpu"
    if runtime == "torch":
        import torch

        available = bool(torch.cuda.is_available())
        what = "PyTorch sees no CUDA device"
    else:
        import onnxruntime as ort

        available = "CUDAExecutionProvider" in ort.get_available_providers()
        what = "ONNX Runtime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    if requested == "cuda" and not available:
        raise ConfigError(f"serve.device is cuda but {what}; set serve.device: auto or cpu", field="serve.device")
    return "cuda" if available else "cpu"


# -- inputs ---------------------------------------------------------------------------------------


def _matrix(features: Any, dtype: Any) -> np.ndarray:
    """The features as one ``[n, k]`` matrix of ``dtype``; a text column is a :class:`RungError` naming it."""
    import numpy as np
    import pandas as pd

    if isinstance(features, pd.DataFrame):
        text = [str(c) for c, t in features.dtypes.items() if t.kind not in "biuf"]
        if text:
            raise RungError(
                f"column(s) {', '.join(text[:3])} are not numeric: a PyTorch or ONNX model takes one matrix of numbers; "
                "encode them in the prepare hook (train.prepare)"
            )
        return np.ascontiguousarray(features.to_numpy(dtype=dtype))
    array = np.asarray(features, dtype=dtype)
    return array.reshape(len(array), -1) if array.ndim == 1 else array


# -- PyTorch --------------------------------------------------------------------------------------


class TorchBackend:
    """A ``torch.nn.Module`` called on the features as one matrix, in eval mode and without gradients.

    The module stays where the caller left it (the CPU after loading); the
    copy that predicts is placed on ``device`` at the first call, in the
    process that predicts, so a module is never pickled from a GPU.
    """

    kind = "pytorch"

    def __init__(self, module: Any, *, device: str = "cpu") -> None:
        self.module = module
        self.device = device
        self._live: Any = None
        self._lock = threading.Lock()

    @classmethod
    def trained(cls, module: Any) -> TorchBackend:
        """The module as the training code left it: it predicts where its parameters are."""
        parameter = next(iter(module.parameters()), None)
        return cls(module, device=str(parameter.device.type) if parameter is not None else "cpu")

    def _placed(self) -> Any:
        if self._live is None:
            with self._lock:
                if self._live is None:
                    import copy

                    current = next(iter(self.module.parameters()), None)
                    here = current.device.type if current is not None else "cpu"
                    live = self.module if here == self.device else copy.deepcopy(self.module).to(self.device)
                    live.eval()
                    self._live = live
        return self._live

    def run(self, features: Any) -> Output:
        import numpy as np
        import torch

        module = self._placed()
        parameter = next((p for p in module.parameters() if p.is_floating_point()), None)
        dtype = parameter.dtype if parameter is not None else torch.float32
        matrix = _matrix(features, np.float32 if dtype == torch.float32 else np.float64)
        if not matrix.flags.writeable:  # a frame's read-only buffer (pyarrow): torch wants its own
            matrix = matrix.copy()
        x = torch.from_numpy(matrix).to(device=self.device, dtype=dtype)
        with torch.inference_mode():
            out = module(x)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return Output(scores=out.detach().to("cpu", torch.float64).numpy())

    def __getstate__(self) -> dict[str, Any]:
        import cloudpickle

        return {"module": cloudpickle.dumps(self.module), "device": self.device}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import pickle

        self.__init__(pickle.loads(state["module"]), device=state["device"])  # type: ignore[misc]


# -- ONNX -----------------------------------------------------------------------------------------

_ONNX_TYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
    "tensor(bool)": "bool", "tensor(string)": "object",
}


class OnnxBackend:
    """An ONNX graph run by ONNX Runtime, from the model's bytes (training) or its verified file (serving).

    One session per process, one thread per session (concurrency comes from
    the gateway's batching and workers, as ``serve.model_threads`` says for
    the other flavours).
    """

    kind = "onnx"

    def __init__(self, *, model: bytes | None = None, file: Path | None = None, root: Path | None = None,
                 manifest: dict[str, str] | None = None, device: str = "cpu") -> None:
        if (model is None) == (file is None):
            raise ValueError("an ONNX backend is built from the model's bytes or from its file")
        self._model = model
        self.file = file
        self.root = root
        self.manifest = manifest
        self.requested = device
        self._session = self._start()
        self.device = "cuda" if "CUDAExecutionProvider" in self._session.get_providers() else "cpu"
        if device == "cuda" and self.device != "cuda":
            raise ConfigError("serve.device is cuda but ONNX Runtime could not start its CUDA provider; "
                              "set serve.device: auto or cpu", field="serve.device")
        self.inputs = [(i.name, i.type, list(i.shape)) for i in self._session.get_inputs()]
        self.outputs = [(o.name, o.type, list(o.shape or [])) for o in self._session.get_outputs()]

    @classmethod
    def from_model(cls, model: Any) -> OnnxBackend:
        """From an ``onnx.ModelProto`` or its serialised bytes (what a training function returned)."""
        data = model if isinstance(model, (bytes, bytearray)) else model.SerializeToString()
        return cls(model=bytes(data))

    @classmethod
    def from_file(cls, file: Path, *, root: Path, device: str) -> OnnxBackend:
        """From a registered version's verified files; ``root`` (its folder) is hashed so a worker can check it again."""
        return cls(file=file, root=root, manifest=_digests(root), device=device)

    def _start(self) -> Any:
        from rung.optional import require

        ort = require("onnxruntime", purpose="an ONNX model")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if self.requested in ("auto", "cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        source = self._model if self._model is not None else str(self.file)
        try:
            return ort.InferenceSession(source, sess_options=options, providers=providers)
        except Exception as exc:
            raise RungError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from exc

    def feeds(self, features: Any) -> dict[str, Any]:
        """The graph's inputs from the features: one matrix for one input, else one column per input, by name."""
        import numpy as np
        import pandas as pd

        if len(self.inputs) == 1:
            name, kind, shape = self.inputs[0]
            matrix = _matrix(features, _ONNX_TYPES.get(kind, "float32"))
            width = shape[1] if len(shape) == 2 else None
            if isinstance(width, int) and width != matrix.shape[1]:
                raise RungError(f"the ONNX graph's input {name} takes {width} columns; it was given {matrix.shape[1]}")
            return {name: matrix}
        frame = features if isinstance(features, pd.DataFrame) else pd.DataFrame(features)
        missing = [name for name, _, _ in self.inputs if name not in frame.columns]
        if missing:
            raise RungError(f"the ONNX graph takes the inputs {', '.join(n for n, _, _ in self.inputs)}: one matrix "
                            f"for a single input, or one input per column by name; {', '.join(missing[:3])} are not columns")
        feeds = {}
        for name, kind, _ in self.inputs:
            dtype = _ONNX_TYPES.get(kind, "float32")
            values = frame[name].astype(str).to_numpy(dtype=object) if dtype == "object" else frame[name].to_numpy(dtype=dtype)
            feeds[name] = np.ascontiguousarray(values.reshape(-1, 1))
        return feeds

    def run(self, features: Any, *, task: str = "classification") -> Output:
        import numpy as np

        feeds = self.feeds(features)
        if task == "regression":
            name = next((n for n, t, _ in self.outputs if "float" in t or "double" in t), self.outputs[0][0])
            return Output(scores=np.asarray(self._session.run([name], feeds)[0], dtype=np.float64))
        zipmap = next((n for n, t, _ in self.outputs if t.startswith("seq(map")), None)
        if zipmap is not None:
            rows = self._session.run([zipmap], feeds)[0]
            columns = list(rows[0].keys()) if rows else []
            return Output(scores=np.array([[row[c] for c in columns] for row in rows], dtype=np.float64), columns=columns)
        numeric = [n for n, t, _ in self.outputs if "float" in t or "double" in t]
        if numeric:
            name = next((n for n in numeric if "prob" in n.lower()), numeric[0])
            return Output(scores=np.asarray(self._session.run([name], feeds)[0], dtype=np.float64))
        return Output(labels=np.asarray(self._session.run([self.outputs[0][0]], feeds)[0]).reshape(-1))

    def __getstate__(self) -> dict[str, Any]:
        return {"model": self._model, "file": self.file, "root": self.root, "manifest": self.manifest,
                "device": self.requested}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state["file"] is not None:
            _check_again(state["root"], state["manifest"])
        self.__init__(model=state["model"], file=state["file"], root=state["root"],  # type: ignore[misc]
                      manifest=state["manifest"], device=state["device"])


def _digests(root: Path) -> dict[str, str]:
    """sha256 of each file under ``root`` as the gateway loaded it (after ``ModelLoader.fetch_verified``)."""
    import hashlib

    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        with open(path, "rb") as handle:
            out[path.relative_to(root).as_posix()] = hashlib.file_digest(handle, "sha256").hexdigest()
    return out


def _check_again(root: Path, manifest: dict[str, str]) -> None:
    """Before a worker loads files again: refuse them if any changed since the gateway verified and loaded them."""
    actual = _digests(root)
    changed = sorted(k for k in manifest if actual.get(k) != manifest[k])
    if changed:
        raise IntegrityError(f"{root}: model files changed since they were verified ({', '.join(changed[:3])}); refusing to load them")


# -- MLflow python_function -----------------------------------------------------------------------


class PyfuncBackend:
    """An MLflow ``python_function`` model: a ``PythonModel`` (training, or one rung registered), or any pyfunc.

    A ``PythonModel`` is called directly with the prepared features (MLflow's
    schema check would hold it to the raw columns of the signature); any
    other pyfunc model goes through ``PyFuncModel.predict``.
    """

    kind = "pyfunc"
    device = "cpu"

    def __init__(self, *, python_model: Any = None, context: Any = None, path: Path | None = None,
                 manifest: dict[str, str] | None = None, unwrap: bool = False) -> None:
        self.python_model = python_model
        self.context = context
        self.path = path
        self.manifest = manifest
        self.unwrap = unwrap
        self._pyfunc: Any = None
        if path is not None:
            import mlflow.pyfunc

            self._pyfunc = mlflow.pyfunc.load_model(str(path))
            if unwrap:
                self.python_model = self._pyfunc.unwrap_python_model()
                self.context = getattr(getattr(self._pyfunc, "_model_impl", None), "context", None)

    @classmethod
    def from_path(cls, path: Path, *, unwrap: bool) -> PyfuncBackend:
        return cls(path=path, manifest=_digests(path), unwrap=unwrap)

    def run(self, features: Any) -> Output:
        if self.python_model is not None:
            result = _call_python_model(self.python_model, self.context, features)
        else:
            result = self._pyfunc.predict(features)
        return _output_of(result)

    def __getstate__(self) -> dict[str, Any]:
        if self.path is not None:
            return {"path": self.path, "manifest": self.manifest, "unwrap": self.unwrap}
        import cloudpickle

        return {"python_model": cloudpickle.dumps(self.python_model)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import pickle

        if "path" in state:
            _check_again(state["path"], state["manifest"])
            self.__init__(path=state["path"], manifest=state["manifest"], unwrap=state["unwrap"])  # type: ignore[misc]
        else:
            self.__init__(python_model=pickle.loads(state["python_model"]))  # type: ignore[misc]


def _call_python_model(model: Any, context: Any, features: Any) -> Any:
    """``model.predict``, with or without MLflow's ``context`` argument (MLflow 3 allows both)."""
    import inspect

    try:
        names = list(inspect.signature(model.predict).parameters)
    except (TypeError, ValueError):
        names = ["context", "model_input"]
    if names[:1] == ["context"] or (len(names) >= 2 and names[1] in ("model_input", "data")):
        return model.predict(context, features)
    return model.predict(features)


def _output_of(result: Any) -> Output:
    import numpy as np
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        if result.shape[1] == 1:
            result = result.iloc[:, 0]
        else:
            return Output(scores=result.to_numpy(dtype=np.float64), columns=list(result.columns))
    array = np.asarray(result)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array.reshape(-1)
    if array.dtype.kind in "fc" or array.ndim == 2:
        return Output(scores=array.astype(np.float64))
    return Output(labels=array)


# -- the predictors -------------------------------------------------------------------------------


def to_proba(scores: np.ndarray, classes: int | None) -> np.ndarray:
    """Probabilities ``[n, k]`` from a model's scores: a row that sums to 1 as it is, any other row through a softmax.

    Decided row by row, so a row's answer never depends on the rows batched
    with it. One score per row is P(positive) of a binary classifier, and
    must be a probability (a model that ends in a logit adds a sigmoid).
    """
    import numpy as np

    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1 or (s.ndim == 2 and s.shape[1] == 1):
        s = s.reshape(-1)
        if classes not in (None, 2):
            raise RungError(f"the model outputs one score per row but the classifier has {classes} classes; "
                            "output one score per class (class i in column i, classes sorted)")
        outside = ~((s >= 0) & (s <= 1)) & ~np.isnan(s)
        if outside.any():
            raise RungError(f"a classifier with one output must give P(positive) in [0, 1]; it gave {s[outside][0]:g}: "
                            "end the model with a sigmoid, or output one score per class")
        return np.column_stack([1.0 - s, s])
    if s.ndim != 2:
        raise RungError(f"a classifier must output [rows, classes] scores; this one outputs shape {list(s.shape)}")
    if classes is not None and s.shape[1] != classes:
        raise RungError(f"the model outputs {s.shape[1]} scores per row for {classes} classes; "
                        "output one score per class (class i in column i, classes sorted)")
    is_probability = (s >= 0).all(axis=1) & np.isclose(s.sum(axis=1), 1.0, atol=1e-4)
    if is_probability.all():
        return s
    shifted = np.exp(s - s.max(axis=1, keepdims=True))
    return np.where(is_probability[:, None], s, shifted / shifted.sum(axis=1, keepdims=True))


class _Predictor:
    """Common to both: the backend, the task, where it predicts."""

    task = ""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    @property
    def device(self) -> str:
        return str(self.backend.device)

    @property
    def flavor(self) -> str:
        return str(self.backend.kind)

    def _run(self, features: Any) -> Output:
        if isinstance(self.backend, OnnxBackend):
            return self.backend.run(features, task=self.task)
        return self.backend.run(features)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.flavor} on {self.device})"


class Regressor(_Predictor):
    """``predict``: one value per row."""

    task = "regression"

    def predict(self, features: Any) -> np.ndarray:
        import numpy as np

        out = self._run(features)
        values = np.asarray(out.scores if out.scores is not None else out.labels)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values.reshape(-1)
        if values.ndim != 1:
            raise RungError(f"a regressor must output one value per row; this one outputs shape {list(values.shape)}")
        return values.astype(np.float64)


class Classifier(_Predictor):
    """``predict`` (labels), ``predict_proba`` ([n, k], column i for ``classes_[i]``) and ``classes_``.

    ``classes`` are the training labels, sorted; without them (a model
    registered elsewhere) the classes are the indices of the output columns.
    """

    task = "classification"

    def __init__(self, backend: Any, classes: list[Any]) -> None:
        super().__init__(backend)
        self.classes = list(classes)

    @property
    def classes_(self) -> np.ndarray:
        import numpy as np

        return np.asarray(self.classes)

    def predict_proba(self, features: Any) -> np.ndarray:
        return self._proba(self._run(features))

    def predict(self, features: Any) -> np.ndarray:
        import numpy as np

        out = self._labels_or_scores(self._run(features))
        if out.scores is None:
            return np.asarray(out.labels)
        best = self._proba(out).argmax(axis=1)
        return np.asarray(self.classes)[best] if self.classes else best

    def _labels_or_scores(self, out: Output) -> Output:
        """A python_function model's one value per row is its labels when every value is a class."""
        import numpy as np

        if (self.flavor == "pyfunc" and out.scores is not None and out.scores.ndim == 1 and self.classes
                and set(np.unique(out.scores).tolist()) <= {c for c in self.classes if isinstance(c, (int, float))}):
            return Output(labels=out.scores.astype(type(self.classes[0])))
        return out

    def _proba(self, out: Output) -> np.ndarray:
        import numpy as np

        out = self._labels_or_scores(out)
        count = len(self.classes) or None
        if out.scores is None:
            labels = np.asarray(out.labels)
            known = [str(c) for c in self.classes] if self.classes else sorted({str(v) for v in labels.tolist()})
            index = {c: i for i, c in enumerate(known)}
            unknown = sorted({str(v) for v in labels.tolist()} - set(index))
            if unknown:
                raise RungError(f"the model answered label(s) {', '.join(unknown[:3])}, which are not among its classes {known}")
            proba = np.zeros((len(labels), len(known)))
            proba[np.arange(len(labels)), [index[str(v)] for v in labels.tolist()]] = 1.0
            return proba
        scores = out.scores
        if out.columns is not None and self.classes:
            position = {str(c): i for i, c in enumerate(out.columns)}
            missing = [c for c in self.classes if str(c) not in position]
            if missing:
                raise RungError(f"the model's outputs name the classes {out.columns}; {missing[:3]} are missing")
            scores = scores[:, [position[str(c)] for c in self.classes]]
        return to_proba(scores, count)


def make_predictor(backend: Any, *, task: str, classes: list[Any]) -> Classifier | Regressor:
    """The predictor for ``backend`` (a :class:`TorchBackend`, :class:`OnnxBackend` or :class:`PyfuncBackend`)."""
    return Classifier(backend, classes) if task == "classification" else Regressor(backend)
