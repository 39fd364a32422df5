"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on grpcio's asyncio server.

The servicer is one more way into :meth:`~rung.serving.gateway.Gateway.infer`:
a ``ModelInfer`` call is decoded into the same columns as a REST OIP body
(each input from its typed ``contents`` or from ``raw_input_contents``, never
both, then the REST layouts: one tensor per column, or one ``[n, k]``
tensor in signature order) and takes the same routing, batching, request
log, metrics and tokens. It answers with ``raw_output_contents`` when the
request sent raw inputs (as tritonclient does) or asks for binary outputs
(``binary_data_output`` on the request, ``binary_data`` on an output), else
with typed contents; the trailing metadata names what answered, as REST's
headers do.

A refusal is the call's status, from the same table as REST's answers
(:mod:`rung.serving.responses`), with a message that names the field at
fault (also in the ``x-rung-field`` trailing metadata); an exception that is
not rung's is ``INTERNAL`` with a generic message, logged with its
traceback, never sent.

The server runs on the event loop of the REST gateway, whose runtimes and
futures belong to that loop (:class:`GrpcServer`; started by
:mod:`rung.serving.server`). It binds the host REST binds; its receive limit
is ``serve.max_body_mb``, so a larger message is ``RESOURCE_EXHAUSTED``
before it is read.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

import grpc

from rung import __version__
from rung.errors import ConfigError, InputError, RequestInvalid, RungError, ServingUnavailable
from rung.models.signature import Column, Columns
from rung.serving import tensors
from rung.serving.app import EXTENSIONS, GENERIC, describe_model, model_is_ready
from rung.serving.gateway import Gateway, InferenceRequest
from rung.serving.grpc import inference_pb2 as pb
from rung.serving.grpc import inference_pb2_grpc as pb_grpc
from rung.serving.http import request_id, version_number
from rung.serving.oip import parse_oip, requested_outputs
from rung.serving.repository import load_model, unload_model
from rung.serving.responses import UNKNOWN, field_of, status_of

__all__ = ["GrpcServer", "InferenceServicer", "decode_inputs", "encode_outputs"]

log = logging.getLogger("rung.gateway")

# The typed list of InferTensorContents that carries each datatype (FP16 and BF16 have none: raw only).
CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}
LISTENERS = 8  # grpc.aio servers sharing the port (GrpcServer)
REFUSING_S = 0.3  # how long a draining server refuses new calls before it stops (GrpcServer.stop)
METADATA_VALUE = re.compile(r"^[ -~]{1,200}$")  # what a trailing metadata value may hold: printable ASCII

R = TypeVar("R")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]


# -- decoding and encoding tensors ------------------------------------------------------------


def decode_inputs(request: Any, columns: list[Column]) -> tuple[Columns, int]:
    """A ``ModelInferRequest``'s inputs → raw columns and row count, laid out as a REST OIP body's.

    Each tensor is decoded to a column (:func:`rung.serving.tensors.to_column`: numpy for numbers),
    then :func:`~rung.serving.oip.parse_oip` lays the tensors out, so the
    two protocols accept the same shapes and refuse them in the same words.
    """
    inputs = request.inputs
    if not inputs:
        raise InputError("inputs: send at least one input tensor", field="inputs")
    raw = request.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise InputError(f"raw_input_contents: {len(raw)} entries for {len(inputs)} inputs; send one per input, in "
                         "the order of inputs", field="raw_input_contents")
    body = []
    for i, tensor in enumerate(inputs):
        where = f"inputs[{i}]"
        shape = list(tensor.shape)
        if raw:
            if tensor.HasField("contents"):
                raise InputError(f"{where}.contents: the request sends raw_input_contents; send each tensor's data "
                                 "in one of them, not both", field=f"{where}.contents")
            data = tensors.to_column(tensors.decode(tensor.datatype, shape, raw[i], where), where)
        else:
            data = _typed(tensor, where)
        body.append({"name": tensor.name, "shape": shape, "datatype": tensor.datatype, "data": data})
    return parse_oip({"inputs": body}, columns)


def _typed(tensor: Any, where: str) -> list[Any]:
    """One input's elements from the typed list its datatype takes; any other list is refused."""
    datatype = tensor.datatype
    name = CONTENTS.get(datatype)
    if name is None:
        if datatype in tensors.OIP_TYPES:
            raise InputError(f"{where}.datatype: {datatype} has no typed contents; send it in raw_input_contents",
                             field=f"{where}.datatype")
        raise InputError(f"{where}.datatype: {datatype[:40]!r} is not an OIP v2 datatype", field=f"{where}.datatype")
    contents = tensor.contents
    for descriptor, _ in contents.ListFields():
        if descriptor.name != name:
            raise InputError(f"{where}.contents: a {datatype} tensor sends its data in {name}, not {descriptor.name}",
                             field=f"{where}.contents")
    values = getattr(contents, name)
    if datatype == "BYTES":
        return tensors.to_column(list(values), where)
    out = list(values)
    if datatype in ("FP32", "FP64"):
        return [None if v != v else v for v in out]  # NaN is a missing value, as null is in JSON
    return out


def encode_outputs(response: Any, outputs: dict[str, Any], raw: bool) -> None:
    """``outputs`` into a ``ModelInferResponse``: as ``raw_output_contents`` or as typed contents.

    The datatypes are REST's (:func:`rung.serving.tensors.datatype_of`); one
    with no typed list (FP16) makes the whole answer raw, as a response
    cannot mix the two.
    """
    datatypes = [tensors.datatype_of(values) for values in outputs.values()]
    raw = raw or any(d not in CONTENTS for d in datatypes)
    for (name, values), datatype in zip(outputs.items(), datatypes, strict=True):
        tensor = response.outputs.add(name=name, datatype=datatype, shape=[len(values)])
        if raw:
            response.raw_output_contents.append(tensors.encode(values, datatype)[1])
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(v if isinstance(v, bytes) else str(v).encode() for v in values.tolist())
        else:
            getattr(tensor.contents, CONTENTS[datatype]).extend(values.tolist())


def _flag(parameters: Any, name: str) -> bool:
    return name in parameters and parameters[name].WhichOneof("parameter_choice") == "bool_param" and parameters[name].bool_param


# -- the service ----------------------------------------------------------------------------


def _answering(method: Handler[R]) -> Handler[R]:
    """A call whose exceptions become its status: rung's from the table, any other ``INTERNAL`` (logged, not sent)."""

    @wraps(method)
    async def call(self: InferenceServicer, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            if isinstance(request, Unreadable):
                raise RequestInvalid(request.error, "request")
            return await method(self, request, context)
        except Exception as exc:
            code, message, trailing = self.refusal(method.__name__, exc)
        await context.abort(code, message, trailing)
        raise AssertionError("context.abort returned")  # it raises; this line is never reached

    return call


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """``GRPCInferenceService`` for ``gateway``: health, metadata, inference, statistics and the model repository.

    Tokens are REST's: with ``serve.protect_predict`` inference, statistics
    and the repository index need a viewer token (``authorization:
    Bearer ...`` metadata); loading and unloading always need a deployer's.
    """

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def refusal(self, method: str, exc: Exception) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
        """The status, message and trailing metadata that answer ``exc`` raised by ``method``."""
        status = status_of(exc)
        if method == "ModelInfer":
            self.gateway.metrics.errors.labels(str(status.http)).inc()
        if status is UNKNOWN or not isinstance(exc, RungError):
            log.error("unhandled error in gRPC %s", method, exc_info=exc)
            return grpc.StatusCode.INTERNAL, GENERIC, ()
        code = grpc.StatusCode[status.grpc]
        if code is grpc.StatusCode.UNAVAILABLE:
            if not self.gateway.draining:  # draining, refusals are the plan
                log.warning("%s in gRPC %s: %s", type(exc).__name__, method, exc)
        elif status.http >= 500:
            log.error("%s in gRPC %s: %s", type(exc).__name__, method, exc, exc_info=exc)
        message = str(exc)
        field = field_of(exc)
        trailing: tuple[tuple[str, str], ...] = ()
        if field is not None:
            if field.split(".", 1)[0] not in message:  # "inputs[3]: ..." already says where
                message = f"{field}: {message}"
            if METADATA_VALUE.match(field):
                trailing = (("x-rung-field", field),)
        if code is grpc.StatusCode.UNAVAILABLE and "retry" not in message:
            message += "; the server cannot answer this now, not the request's fault: retry in a moment"
        return code, message, trailing

    @_answering
    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    @_answering
    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self.gateway.ready and not self.gateway.draining)

    @_answering
    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerMetadataResponse(name="rung", version=__version__, extensions=EXTENSIONS)

    @_answering
    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ModelReadyResponse(ready=model_is_ready(self.gateway, request.name, version_number(request.version or None)))

    @_answering
    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        described = describe_model(self.gateway, request.name, version_number(request.version or None))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=described["name"], versions=described["versions"], platform=described["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in described["inputs"]],
            outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in described["outputs"]],
        )

    @_answering
    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        gateway = self.gateway
        in_flight = gateway.metrics.in_flight
        in_flight.inc()
        try:
            if gateway.draining:
                raise ServingUnavailable("the gateway is shutting down; retry on another replica, or once it is back")
            metadata = _metadata(context)
            if gateway.settings.protect_predict:
                await gateway.authorise(metadata.get("authorization"), "viewer")
            name = request.model_name
            version = version_number(request.model_version or None)
            raw, rows = decode_inputs(request, gateway.pool.columns(name, version))
            rid = request_id(metadata.get("x-request-id") or request.id)
            asked = [o.name for o in request.outputs]
            answer = await gateway.infer(InferenceRequest(name, version, raw, rows, rid, "grpc", metadata.get("x-rung-key"),
                                                          started, tuple(asked)))
            outputs = requested_outputs(asked, answer.outputs)
            model, table = answer.model, answer.table
            response = pb.ModelInferResponse(model_name=model.name, model_version=str(model.version), id=answer.request_id)
            response.parameters["variant"].string_param = answer.variant
            response.parameters["routing_revision"].int64_param = table.revision
            binary = bool(request.raw_input_contents) or _flag(request.parameters, "binary_data_output") \
                or any(_flag(o.parameters, "binary_data") for o in request.outputs)
            encode_outputs(response, outputs, binary)
            context.set_trailing_metadata(tuple(answer.headers().items()))
            return response
        finally:
            in_flight.dec()

    @_answering
    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        from google.protobuf import json_format

        await self._reader(context)
        snapshot = self.gateway.stats.snapshot(request.name or None, version_number(request.version or None))
        return json_format.ParseDict(snapshot, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)

    @_answering
    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._reader(context)
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(models=[index(**m) for m in self.gateway.pool.repository_index(ready=request.ready)])

    @_answering
    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        actor = await self._deployer(context)
        await load_model(self.gateway, request.model_name, list(request.parameters), actor)
        return pb.RepositoryModelLoadResponse()

    @_answering
    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        actor = await self._deployer(context)
        await unload_model(self.gateway, request.model_name, actor)
        return pb.RepositoryModelUnloadResponse()

    async def _reader(self, context: grpc.aio.ServicerContext) -> None:
        if self.gateway.settings.protect_predict:
            await self.gateway.authorise(_metadata(context).get("authorization"), "viewer")

    async def _deployer(self, context: grpc.aio.ServicerContext) -> str:
        return await self.gateway.authorise(_metadata(context).get("authorization"), "deployer", cached=False)


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, Any]:
    return dict(context.invocation_metadata() or ())


# -- the server -----------------------------------------------------------------------------


class GrpcServer:
    """grpcio's asyncio servers for one gateway: :meth:`bind` (before the models load), :meth:`start`, :meth:`stop`.

    Create it on the event loop it will serve from (the REST gateway's).
    ``LISTENERS`` servers share the port (``SO_REUSEPORT``; the kernel
    spreads connections over them): a grpc.aio server takes its next call
    only once the loop has handed it the last one, so under many
    connections calls queue in grpc, arrive one per loop pass and meet in
    smaller batches. Eight servers answered 1.5 times the calls of one at
    64 connections (single rows, the churn template, a 2-core machine).
    """

    def __init__(self, gateway: Gateway, host: str, port: int, *, shared: bool = False) -> None:
        self.gateway, self.host, self.port = gateway, host, port
        self.shared = shared  # one of several gateway processes on the port: the supervisor checked it was free
        self.servers: list[grpc.aio.Server] = []

    @property
    def target(self) -> str:
        """``host:port`` as a gRPC client dials it (the bound port once :meth:`bind` ran)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def bind(self) -> int:
        """Listen on ``host:port`` (``0``: any free port) and return the port; a port in use is a one-line :class:`ConfigError`."""
        in_use = ConfigError(f"the gRPC port {self.port} on {self.host} is in use; pick another with --grpc-port or "
                             "serve.grpc_port (0 turns gRPC off)", field="serve.grpc_port")
        # Asked before grpc binds: its listeners share ports (SO_REUSEPORT), so it would not see another server's
        # (and it logs its own error line). The probe does not share: any listener there makes it fail.
        if self.port and not self.shared and not _free(self.host, self.port):
            raise in_use
        servicer = InferenceServicer(self.gateway)
        options = [("grpc.max_receive_message_length", self.gateway.max_body), ("grpc.max_send_message_length", -1)]
        for _ in range(LISTENERS):
            server = grpc.aio.server(options=options)
            _register(server, servicer)
            try:
                self.port = server.add_insecure_port(self.target)
            except RuntimeError as exc:
                raise in_use from exc
            self.servers.append(server)
        return self.port

    async def start(self) -> None:
        for server in self.servers:
            await server.start()

    async def stop(self, grace_s: float) -> None:
        """Drain: refuse new calls for a moment, then stop; calls in flight have ``grace_s`` to finish.

        grpc cancels the calls it has received but not yet handed to the
        servicer when the server stops. So new inference calls are first
        refused ``UNAVAILABLE`` (the gateway is draining: the servicer says
        so), for ``REFUSING_S``, which empties that queue, and only then do
        the servers stop, taking no more calls.
        """
        if not self.servers:
            return
        if grace_s > 0:
            await asyncio.sleep(REFUSING_S)
        await asyncio.gather(*(server.stop(grace_s) for server in self.servers))


class Unreadable:
    """A request whose bytes are not its message (garbage on the wire): refused ``INVALID_ARGUMENT``, not grpc's ``UNKNOWN``."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _register(server: grpc.aio.Server, servicer: InferenceServicer) -> None:
    """The service's handlers on ``server``, as the generated code adds them but with requests parsed leniently.

    grpc answers a request its deserializer cannot parse with ``UNKNOWN``
    and the parser's exception; here the servicer gets an
    :class:`Unreadable` and refuses it in its own words.
    """
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_lenient(getattr(pb, method.input_type.name)),
            response_serializer=getattr(pb, method.output_type.name).SerializeToString,
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


def _lenient(message: Any) -> Callable[[bytes], Any]:
    from google.protobuf.message import DecodeError

    def parse(raw: bytes) -> Any:
        try:
            return message.FromString(raw)
        except DecodeError:
            return Unreadable(f"the request is not a serialised {message.DESCRIPTOR.full_name} message; send one as "
                              "inference.proto defines it")

    return parse


def _free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be listened on now (SO_REUSEADDR, as grpc binds: a port in TIME_WAIT is free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
