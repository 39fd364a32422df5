"""Open Inference Protocol v2 bodies over REST: JSON, and Triton's binary tensor data extension.

A request is read into the same *columns* every protocol gives
:meth:`~rung.serving.gateway.Gateway.infer` (``{name: values}``: JSON's lists,
a binary numeric tensor's array). Two
layouts are accepted: one tensor per column (``name`` = column, shape
``[n]`` or ``[n, 1]``), or a single ``[n, k]`` tensor whose columns follow the
model signature.

The binary extension, as Triton and ``tritonclient.http`` speak it: with an
``Inference-Header-Content-Length: N`` header the first ``N`` bytes of the
body are the JSON request and the rest are tensors, concatenated in the order
of the inputs that say ``parameters.binary_data_size`` (its byte count) in
place of ``data``; the content type is then whatever the client sends. An
output asked for with ``parameters.binary_data: true`` (or every output, with
the request's ``parameters.binary_data_output: true``) is answered the same
way: its bytes after the JSON, its size in its ``parameters.binary_data_size``,
the JSON's length in the response's ``Inference-Header-Content-Length``.
Tensors as bytes are :mod:`rung.serving.tensors`'s.

Every problem is an :class:`~rung.errors.InputError` (or, for a body that
cannot be split or read, a :class:`~rung.errors.RequestInvalid`) naming the
field: ``inputs[2].parameters.binary_data_size``, ``outputs[0].name``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from rung.errors import InputError, RequestInvalid
from rung.models.signature import Column, Columns
from rung.serving import tensors
from rung.serving.http import parse_json
from rung.serving.protocols import to_jsonable

__all__ = ["HEADER_LENGTH", "Asked", "asked_outputs", "infer_body", "parse_oip", "requested_outputs", "split_body"]

HEADER_LENGTH = "inference-header-content-length"
_HEADER_FIELD = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class Asked:
    """What a request asked of the answer: which outputs (none named: all), and which of them as binary.

    An output's own ``parameters.binary_data`` decides for it; the request's
    ``parameters.binary_data_output`` for the others.
    """

    names: list[str]
    binary: dict[str, bool]
    default_binary: bool = False

    def is_binary(self, name: str) -> bool:
        return self.binary.get(name, self.default_binary)


def split_body(content: bytes, header_length: str | None) -> tuple[Any, memoryview | None]:
    """A request body → its JSON request and, under the binary extension, the bytes after it.

    ``header_length`` is the ``Inference-Header-Content-Length`` header's
    value (``None``: the whole body is JSON).
    """
    if header_length is None:
        return parse_json(content), None
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise RequestInvalid(f"{_HEADER_FIELD}: expected the JSON header's length in bytes, got {header_length[:40]!r}",
                             HEADER_LENGTH)
    length = int(text)
    if length > len(content):
        raise RequestInvalid(f"{_HEADER_FIELD} is {length}, but the body has only {len(content)} bytes", HEADER_LENGTH)
    view = memoryview(content)
    try:
        return orjson.loads(view[:length]), view[length:]
    except orjson.JSONDecodeError as exc:
        raise RequestInvalid(f"the first {length} bytes ({_HEADER_FIELD}) are not valid JSON: {exc}", HEADER_LENGTH) from None


def _flatten(data: Any, where: str) -> Any:
    """A tensor's JSON ``data`` as its flat elements (a nested list row by row); a decoded tensor is flat already."""
    if isinstance(data, np.ndarray):
        return data
    if not isinstance(data, list):
        raise InputError(f"{where}: expected a list", field=where)
    if data and isinstance(data[0], list):
        out: list[Any] = []
        for row in data:
            if not isinstance(row, list):
                raise InputError(f"{where}: mixed nesting", field=where)
            out.extend(row)
        return out
    return data


def parse_oip(body: Any, columns: list[Column], binary: bytes | memoryview | None = None) -> tuple[Columns, int]:
    """An OIP v2 inference request → raw columns and row count (check them with :func:`~rung.serving.protocols.check_columns`).

    ``binary`` is what followed the JSON under the binary extension
    (:func:`split_body`); an input that says ``parameters.binary_data_size``
    takes that many bytes of it, in the order of the inputs, and together
    they must use it all.
    """
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object with 'inputs'", field="inputs")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InputError("'inputs' must be a non-empty list of tensors", field="inputs")
    names = [c.name for c in columns]
    tensors_in: list[tuple[str, list[int], Any]] = []
    offset, last_binary = 0, None
    for i, tensor in enumerate(inputs):
        where = f"inputs[{i}]"
        if not isinstance(tensor, dict):
            raise InputError(f"{where}: expected an object with name, shape, datatype, data", field=where)
        name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
        if not isinstance(name, str) or not name:
            raise InputError(f"{where}.name: required, a string", field=f"{where}.name")
        if not isinstance(shape, list) or not shape:
            raise InputError(f"{where}.shape: expected a list of non-negative integers", field=f"{where}.shape")
        count = tensors.element_count(shape, where)
        if datatype not in tensors.OIP_TYPES:
            raise InputError(f"{where}.datatype: {str(datatype)[:40]!r} is not an OIP v2 datatype", field=f"{where}.datatype")
        size = _binary_size(tensor, where)
        if size is None:
            data = _flatten(tensor.get("data"), f"{where}.data")
            if count != len(data):
                raise InputError(f"{where}: shape {shape} needs {count} values, data has {len(data)}", field=f"{where}.data")
        else:
            field = f"{where}.parameters.binary_data_size"
            if binary is None:
                raise InputError(f"{field}: the request has no binary part; send the JSON's length in the "
                                 f"{_HEADER_FIELD} header and the tensors after it", field=field)
            if offset + size > len(binary):
                raise InputError(f"{field}: {size} bytes, but the binary part has {len(binary) - offset} left after the "
                                 "inputs before it", field=field)
            data = tensors.to_column(tensors.decode(datatype, shape, binary[offset:offset + size], where), where)
            offset, last_binary = offset + size, field
        tensors_in.append((name, shape, data))
    if binary is not None and offset != len(binary):
        field = last_binary or HEADER_LENGTH
        raise InputError(f"the binary part has {len(binary)} bytes, the inputs' binary_data_size add up to {offset}; "
                         f"they must match (and {_HEADER_FIELD} be the JSON's length)", field=field)
    return _layout(tensors_in, names)


def _binary_size(tensor: dict[str, Any], where: str) -> int | None:
    """The byte count an input says it has in the binary part; ``None`` when it carries JSON ``data``."""
    parameters = tensor.get("parameters")
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise InputError(f"{where}.parameters: expected an object", field=f"{where}.parameters")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    field = f"{where}.parameters.binary_data_size"
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InputError(f"{field}: expected a byte count, got {str(size)[:40]!r}", field=field)
    if tensor.get("data") is not None:
        raise InputError(f"{where}: send its data in 'data' or in the binary part (parameters.binary_data_size), not both",
                         field=f"{where}.data")
    return size


def _layout(found: list[tuple[str, list[int], Any]], names: list[str]) -> tuple[Columns, int]:
    """Tensors → columns: one ``[n, k]`` tensor in signature order, or one ``[n]`` / ``[n, 1]`` tensor per column."""
    if len(found) == 1 and found[0][0] not in names and len(found[0][1]) == 2:
        _, (rows, width), data = found[0]
        if width != len(names):
            raise InputError(f"inputs[0]: a [n, k] tensor needs k = {len(names)} columns ({', '.join(names)})",
                             field="inputs[0].shape")
        return {name: data[j::width] for j, name in enumerate(names)}, rows
    out: Columns = {}
    rows = len(found[0][2])
    for i, (name, shape, data) in enumerate(found):
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise InputError(f"inputs[{i}].shape: a column tensor has shape [n] or [n, 1], got {shape}", field=f"inputs[{i}].shape")
        if len(data) != rows:  # also a tensor the model does not take: the rows are counted from inputs[0]
            raise InputError(f"inputs[{i}]: {len(data)} rows, inputs[0] has {rows}; every tensor needs the same number",
                             field=f"inputs[{i}].shape")
        out[name] = data
    return out, rows


def asked_outputs(body: Any) -> Asked:
    """The request's ``outputs`` (names, each one's ``parameters.binary_data``) and ``parameters.binary_data_output``."""
    parameters = body.get("parameters") if isinstance(body, dict) else None
    all_binary = False
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise InputError("parameters: expected an object", field="parameters")
        all_binary = _flag(parameters.get("binary_data_output"), "parameters.binary_data_output")
    outputs = body.get("outputs") if isinstance(body, dict) else None
    if outputs is None:
        return Asked([], {}, all_binary)
    if not isinstance(outputs, list):
        raise InputError("outputs: expected a list of {name, parameters}", field="outputs")
    names: list[str] = []
    binary: dict[str, bool] = {}
    for i, output in enumerate(outputs):
        where = f"outputs[{i}]"
        if not isinstance(output, dict):
            raise InputError(f"{where}: expected an object with a name", field=where)
        name = output.get("name")
        if not isinstance(name, str) or not name:
            raise InputError(f"{where}.name: required, a string", field=f"{where}.name")
        names.append(name)
        wanted = output.get("parameters") or {}
        if not isinstance(wanted, dict):
            raise InputError(f"{where}.parameters: expected an object", field=f"{where}.parameters")
        if wanted.get("classification"):
            raise InputError(f"{where}.parameters.classification: the classification extension is not served; ask for "
                             "'proba' (and 'predict') instead", field=f"{where}.parameters.classification")
        if wanted.get("binary_data") is not None:
            binary[name] = _flag(wanted["binary_data"], f"{where}.parameters.binary_data")
    return Asked(names, binary, all_binary)


def _flag(value: Any, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InputError(f"{field}: expected true or false, got {str(value)[:40]!r}", field=field)
    return value


def requested_outputs(names: list[str], outputs: dict[str, Any], where: str = "outputs") -> dict[str, Any]:
    """The outputs a request asked for, in its order (none asked: all); an unknown name is an :class:`InputError`.

    ``names[i]`` is reported as ``{where}[i].name``; the message lists what
    the model gives, so the caller can correct the request.
    """
    if not names:
        return outputs
    chosen: dict[str, Any] = {}
    for i, name in enumerate(names):
        if name not in outputs:
            raise InputError(f"{where}[{i}].name: the model has no output {name!r}; it gives {', '.join(outputs)}",
                             field=f"{where}[{i}].name")
        chosen[name] = outputs[name]
    return chosen


def infer_body(head: dict[str, Any], outputs: dict[str, Any], asked: Asked) -> tuple[bytes, int | None]:
    """The response: ``head`` (model, id, parameters) with the asked ``outputs``, and the JSON's length if binary follows.

    A binary output's bytes follow the JSON in output order; with none,
    the length is ``None`` and the body is plain JSON.
    """
    chosen = requested_outputs(asked.names, outputs)
    listed: list[dict[str, Any]] = []
    parts: list[bytes] = []
    for name, values in chosen.items():
        if asked.is_binary(name):
            datatype, raw = tensors.encode(values)
            listed.append({"name": name, "datatype": datatype, "shape": [len(values)],
                           "parameters": {"binary_data_size": len(raw)}})
            parts.append(raw)
        else:
            datatype = tensors.datatype_of(values)
            listed.append({"name": name, "datatype": datatype, "shape": [len(values)], "data": _json_data(values, datatype)})
    header = orjson.dumps({**head, "outputs": listed}, option=orjson.OPT_SERIALIZE_NUMPY)
    if not parts:
        return header, None
    return b"".join([header, *parts]), len(header)


def _json_data(values: Any, datatype: str) -> Any:
    """An output's elements as JSON: numbers (NaN: null), or text for ``BYTES``.

    An int, bool or float64 array goes to orjson whole (``OPT_SERIALIZE_NUMPY``:
    the same text as its ``tolist()``, NaN as null, without a Python object
    per element); a float32 or float16 one goes through ``tolist()``, whose
    float64 digits are what this has always answered.
    """
    if isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype.isnative and (
            values.dtype.kind in "biu" or values.dtype == np.float64):
        return np.ascontiguousarray(values)
    data = to_jsonable(values)
    if datatype == "BYTES" and getattr(values, "dtype", None) is not None and values.dtype.kind != "U":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v if isinstance(v, str) else str(v) for v in data]
    return data
