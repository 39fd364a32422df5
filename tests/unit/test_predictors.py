"""rung.models.predictors: PyTorch, ONNX and python_function models answer like scikit-learn estimators.

The same predictor wraps the trained object (evaluation) and the registered
files (serving), so these tests hold the contract the docstring of the
module states: inputs as one float32 matrix (or one ONNX input per column),
one score per class in sorted-class order, softmax when rows do not sum to
1, one value per row for regressors; and that every predictor pickles to a
worker process and answers the same there.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from rung.errors import ConfigError, RungError
from rung.models.flavours import adapt, detect_flavor
from rung.models.predictors import Classifier, Regressor, resolve_device, to_proba

onnx = pytest.importorskip("onnx", reason="onnx is in the dev extra: pip install -e '.[dev]'")
pytest.importorskip("onnxruntime", reason="onnxruntime is in the dev extra: pip install -e '.[dev]'")
from onnx import TensorProto, helper  # noqa: E402

RNG = np.random.default_rng(7)
X = pd.DataFrame(RNG.normal(size=(50, 3)), columns=["a", "b", "c"])
W = np.array([[1.0, -2.0, 0.5], [0.3, 0.1, -1.0], [-0.7, 0.4, 0.2]], dtype=np.float32)
B = np.array([0.1, -0.2, 0.0], dtype=np.float32)


def linear_graph(weights: np.ndarray, bias: np.ndarray, *, softmax: bool) -> onnx.ModelProto:
    """x [n, k] -> x @ W + b (-> softmax): the smallest classifier or regressor ONNX holds."""
    k, out = weights.shape
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["logits"])]
    last = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
        last = "probabilities"
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, [None, out])],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, [k, out], weights.flatten().tolist()),
                     helper.make_tensor("B", TensorProto.FLOAT, [out], bias.tolist())],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def numpy_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def expected_proba() -> np.ndarray:
    return numpy_softmax(X.to_numpy(np.float32) @ W + B)


@pytest.mark.parametrize("softmax", [True, False], ids=["probabilities", "logits"])
def test_an_onnx_classifier_gives_sorted_class_probabilities_and_labels(softmax: bool) -> None:
    graph = linear_graph(W, B, softmax=softmax)
    assert detect_flavor(graph) == "onnx"
    predictor = adapt(graph, "onnx", task="classification", classes=["high", "low", "mid"])
    proba = predictor.predict_proba(X)
    np.testing.assert_allclose(proba, expected_proba(), rtol=1e-5, atol=1e-6)
    assert list(predictor.classes_) == ["high", "low", "mid"]
    assert list(predictor.predict(X)) == list(np.array(["high", "low", "mid"])[expected_proba().argmax(axis=1)])


def test_onnx_bytes_are_an_onnx_model_and_other_bytes_are_not() -> None:
    data = linear_graph(W, B, softmax=True).SerializeToString()
    assert detect_flavor(data) == "onnx"
    with pytest.raises(RungError, match="PyTorch.*ONNX.*python_function"):
        detect_flavor(b"not a model")


def test_an_onnx_predictor_pickles_and_answers_the_same() -> None:
    predictor = adapt(linear_graph(W, B, softmax=False), "onnx", task="classification", classes=[0, 1, 2])
    again = pickle.loads(pickle.dumps(predictor))
    np.testing.assert_array_equal(again.predict_proba(X), predictor.predict_proba(X))
    assert list(again.predict(X)) == list(predictor.predict(X))


def test_an_onnx_regressor_gives_one_value_per_row() -> None:
    w = np.array([[2.0], [-1.0], [0.5]], dtype=np.float32)
    predictor = adapt(linear_graph(w, np.array([3.0], dtype=np.float32), softmax=False), "onnx", task="regression",
                      classes=[])
    assert isinstance(predictor, Regressor) and not hasattr(predictor, "predict_proba")
    values = predictor.predict(X)
    assert values.shape == (50,)
    np.testing.assert_allclose(values, (X.to_numpy(np.float32) @ w).ravel() + 3.0, rtol=1e-5)


def test_an_onnx_graph_with_one_input_per_column_gets_each_column_by_name() -> None:
    graph = helper.make_graph(
        [helper.make_node("Concat", ["b", "a"], ["x"], axis=1), helper.make_node("MatMul", ["x", "W"], ["y"])],
        "by_name",
        [helper.make_tensor_value_info("a", TensorProto.DOUBLE, [None, 1]),
         helper.make_tensor_value_info("b", TensorProto.DOUBLE, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [None, 1])],
        initializer=[helper.make_tensor("W", TensorProto.DOUBLE, [2, 1], [10.0, 1.0])],
    )
    predictor = adapt(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "onnx",
                      task="regression", classes=[])
    np.testing.assert_allclose(predictor.predict(X), 10 * X["b"] + X["a"])  # columns by name, "c" left out


def test_a_text_column_is_refused_with_its_name() -> None:
    predictor = adapt(linear_graph(W, B, softmax=True), "onnx", task="classification", classes=[0, 1, 2])
    with pytest.raises(RungError, match="column.*colour.*prepare hook"):
        predictor.predict(X.assign(colour="red")[["a", "b", "colour"]])


def test_a_classifier_whose_outputs_do_not_match_its_classes_says_so() -> None:
    predictor = adapt(linear_graph(W, B, softmax=True), "onnx", task="classification", classes=["no", "yes"])
    with pytest.raises(RungError, match="3 scores per row for 2 classes"):
        predictor.predict(X)


@pytest.mark.parametrize("zipmap", [True, False], ids=["zipmap", "tensor"])
def test_an_skl2onnx_classifier_answers_as_the_scikit_learn_model_does(zipmap: bool) -> None:
    skl2onnx = pytest.importorskip("skl2onnx", reason="skl2onnx is in the dev extra: pip install -e '.[dev]'")
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    y = np.where(X["a"] + X["b"] > 0, "yes", "no")
    model = LogisticRegression().fit(X.to_numpy(np.float32), y)
    graph = skl2onnx.convert_sklearn(model, initial_types=[("x", FloatTensorType([None, 3]))],
                                     options={id(model): {"zipmap": zipmap}})
    predictor = adapt(graph, "onnx", task="classification", classes=["no", "yes"])
    np.testing.assert_allclose(predictor.predict_proba(X), model.predict_proba(X.to_numpy(np.float32)), atol=1e-5)
    assert list(predictor.predict(X)) == list(model.predict(X.to_numpy(np.float32)))


def test_to_proba_keeps_probabilities_and_reads_one_column_as_p_positive() -> None:
    probabilities = np.array([[0.2, 0.8], [0.6, 0.4]])
    np.testing.assert_array_equal(to_proba(probabilities, 2), probabilities)
    np.testing.assert_allclose(to_proba(np.array([0.9, 0.1]), 2), [[0.1, 0.9], [0.9, 0.1]])
    with pytest.raises(RungError, match=r"P\(positive\) in \[0, 1\]; it gave 2.*sigmoid"):
        to_proba(np.array([0.5, 2.0]), 2)
    with pytest.raises(RungError, match="one score per row but the classifier has 3 classes"):
        to_proba(np.array([0.5]), 3)


def test_to_proba_decides_row_by_row_so_batching_never_changes_an_answer() -> None:
    logits = np.array([[0.3, 0.7], [2.0, -1.0]])  # the first row happens to sum to 1: read as probabilities
    alone = np.vstack([to_proba(logits[i:i + 1], 2) for i in range(2)])
    np.testing.assert_allclose(to_proba(logits, 2), alone)
    np.testing.assert_allclose(alone[1], numpy_softmax(logits[1:])[0])


def test_device_cpu_is_cpu_and_cuda_without_a_gpu_is_refused() -> None:
    import onnxruntime

    assert resolve_device("cpu", "onnxruntime") == "cpu"
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine's ONNX Runtime has CUDA: the refusal cannot be seen here")
    assert resolve_device("auto", "onnxruntime") == "cpu"
    with pytest.raises(ConfigError, match="serve.device is cuda.*set serve.device: auto or cpu"):
        resolve_device("cuda", "onnxruntime")


# -- python_function ---------------------------------------------------------------------------


class Threshold:
    """A PythonModel's shape: predict(context, model_input); scores or labels per row."""

    def __init__(self, labels: bool) -> None:
        self.labels = labels

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201 - MLflow's signature
        p = 1 / (1 + np.exp(-model_input["a"].to_numpy()))
        if self.labels:
            return np.where(p > 0.5, "yes", "no")
        return pd.DataFrame({"yes": p, "no": 1 - p})  # named columns, not in class order


def python_model(labels: bool):  # noqa: ANN201
    import mlflow.pyfunc

    class Model(mlflow.pyfunc.PythonModel, Threshold):
        def __init__(self) -> None:
            Threshold.__init__(self, labels)

        predict = Threshold.predict

    return Model()


def test_a_python_model_with_named_probability_columns_is_reordered_to_its_classes() -> None:
    model = python_model(labels=False)
    assert detect_flavor(model) == "pyfunc"
    predictor = adapt(model, "pyfunc", task="classification", classes=["no", "yes"])
    p = 1 / (1 + np.exp(-X["a"].to_numpy()))
    np.testing.assert_allclose(predictor.predict_proba(X)[:, 1], p)
    assert list(predictor.predict(X)) == list(np.where(p > 0.5, "yes", "no"))


def test_a_python_model_that_answers_labels_gets_probabilities_of_0_and_1() -> None:
    predictor = adapt(python_model(labels=True), "pyfunc", task="classification", classes=["no", "yes"])
    proba = predictor.predict_proba(X)
    assert set(np.unique(proba)) == {0.0, 1.0}
    assert list(np.array(["no", "yes"])[proba.argmax(axis=1)]) == list(predictor.predict(X))
    assert isinstance(pickle.loads(pickle.dumps(predictor)), Classifier)


# -- PyTorch -----------------------------------------------------------------------------------


def torch_or_skip():  # noqa: ANN201
    return pytest.importorskip(
        "torch", reason="PyTorch is not installed: pip install -e '.[torch]' (CI installs it); its tests did not run")


def mlp(torch, outputs: int):  # noqa: ANN001, ANN201
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, outputs))


def test_a_torch_classifier_gives_softmax_of_its_logits_in_class_order() -> None:
    torch = torch_or_skip()
    module = mlp(torch, 3)
    assert detect_flavor(module) == "pytorch"
    predictor = adapt(module, "pytorch", task="classification", classes=[10, 20, 30])
    with torch.no_grad():
        logits = module(torch.tensor(X.to_numpy(np.float32))).numpy()
    np.testing.assert_allclose(predictor.predict_proba(X), numpy_softmax(logits.astype(np.float64)), rtol=1e-5)
    assert list(predictor.predict(X)) == list(np.array([10, 20, 30])[logits.argmax(axis=1)])
    assert predictor.device == "cpu"


def test_a_torch_binary_classifier_with_one_output_gives_p_positive() -> None:
    torch = torch_or_skip()
    module = torch.nn.Sequential(mlp(torch, 1), torch.nn.Sigmoid())
    predictor = adapt(module, "pytorch", task="classification", classes=[0, 1])
    with torch.no_grad():
        p = module(torch.tensor(X.to_numpy(np.float32))).numpy().ravel()
    np.testing.assert_allclose(predictor.predict_proba(X)[:, 1], p, rtol=1e-6)
    assert list(predictor.predict(X)) == list((p > 0.5).astype(int))
    unbounded = adapt(mlp(torch, 1), "pytorch", task="classification", classes=[0, 1])
    with pytest.raises(RungError, match="sigmoid"):
        unbounded.predict(X)


def test_a_torch_predictor_pickles_and_answers_the_same() -> None:
    torch = torch_or_skip()
    predictor = adapt(mlp(torch, 1), "pytorch", task="regression", classes=[])
    again = pickle.loads(pickle.dumps(predictor))
    np.testing.assert_array_equal(again.predict(X), predictor.predict(X))
    assert again.predict(X).shape == (50,)


def test_a_torch_regressor_with_several_outputs_is_refused() -> None:
    torch = torch_or_skip()
    predictor = adapt(mlp(torch, 2), "pytorch", task="regression", classes=[])
    with pytest.raises(RungError, match="one value per row"):
        predictor.predict(X)


# -- registered files: load_native gives the same predictors, and a worker checks the files again -----


def test_registered_onnx_files_load_as_the_predictor_evaluation_used(tmp_path) -> None:  # noqa: ANN001
    import mlflow.onnx

    from rung.errors import IntegrityError
    from rung.models.flavours import load_native, read_mlmodel

    graph = linear_graph(W, B, softmax=False)
    path = tmp_path / "model"
    mlflow.onnx.save_model(graph, str(path), metadata={"rung": {"task": "classification", "classes": ["x", "y", "z"]}})
    predictor, flavor = load_native(path, read_mlmodel(path), "m:1", task="regression", device="auto")
    assert flavor == "onnx" and isinstance(predictor, Classifier) and predictor.device == "cpu"
    trained = adapt(graph, "onnx", task="classification", classes=["x", "y", "z"])
    np.testing.assert_array_equal(predictor.predict_proba(X), trained.predict_proba(X))
    assert list(predictor.predict(X)) == list(trained.predict(X))

    payload = pickle.dumps(predictor)  # what the gateway sends its worker
    np.testing.assert_array_equal(pickle.loads(payload).predict_proba(X), trained.predict_proba(X))
    onnx_file = path / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match="changed since they were verified.*model.onnx"):
        pickle.loads(payload)


def test_a_registered_python_model_loads_without_its_classes_as_class_indices(tmp_path) -> None:  # noqa: ANN001
    import mlflow.pyfunc

    from rung.models.flavours import load_native, read_mlmodel

    path = tmp_path / "model"
    mlflow.pyfunc.save_model(str(path), python_model=python_model(labels=False))
    predictor, flavor = load_native(path, read_mlmodel(path), "m:1", task="classification")
    assert flavor == "pyfunc" and list(predictor.classes_) == []  # registered elsewhere: no rung metadata
    assert set(predictor.predict(X)) <= {0, 1}
    again = pickle.loads(pickle.dumps(predictor))
    np.testing.assert_allclose(again.predict_proba(X), predictor.predict_proba(X))
