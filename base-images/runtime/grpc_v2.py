"""The Open Inference Protocol over gRPC: the service `inference.GRPCInferenceService` that
KServe and Triton serve and tritonclient's gRPC client calls, for images with grpcio and
protobuf (the tensorflow runtime).

The messages are described below field by field, with the protocol's names and numbers, and
their classes are made by protobuf's own reflection: the image needs no protoc and no
generated code. Fields this server does not read (request parameters) are left out: protobuf
keeps unknown fields aside when it parses. Requests are brought to the JSON form and go
through the same contract checks as HTTP ones (v2.py); outputs go back as raw little-endian
bytes (`raw_output_contents`), which tritonclient reads as numpy arrays.
"""

import sys
import traceback
import uuid
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

import v2

F = descriptor_pb2.FieldDescriptorProto
ONE, MANY = F.LABEL_OPTIONAL, F.LABEL_REPEATED

# name: [(field, number, type, label, message type)]
MESSAGES = {
    "ServerLiveRequest": [],
    "ServerLiveResponse": [("live", 1, F.TYPE_BOOL, ONE, None)],
    "ServerReadyRequest": [],
    "ServerReadyResponse": [("ready", 1, F.TYPE_BOOL, ONE, None)],
    "ModelReadyRequest": [("name", 1, F.TYPE_STRING, ONE, None), ("version", 2, F.TYPE_STRING, ONE, None)],
    "ModelReadyResponse": [("ready", 1, F.TYPE_BOOL, ONE, None)],
    "ServerMetadataRequest": [],
    "ServerMetadataResponse": [
        ("name", 1, F.TYPE_STRING, ONE, None), ("version", 2, F.TYPE_STRING, ONE, None),
        ("extensions", 3, F.TYPE_STRING, MANY, None)],
    "ModelMetadataRequest": [("name", 1, F.TYPE_STRING, ONE, None), ("version", 2, F.TYPE_STRING, ONE, None)],
    "TensorMetadata": [
        ("name", 1, F.TYPE_STRING, ONE, None), ("datatype", 2, F.TYPE_STRING, ONE, None),
        ("shape", 3, F.TYPE_INT64, MANY, None)],
    "ModelMetadataResponse": [
        ("name", 1, F.TYPE_STRING, ONE, None), ("versions", 2, F.TYPE_STRING, MANY, None),
        ("platform", 3, F.TYPE_STRING, ONE, None), ("inputs", 4, F.TYPE_MESSAGE, MANY, "TensorMetadata"),
        ("outputs", 5, F.TYPE_MESSAGE, MANY, "TensorMetadata")],
    "InferTensorContents": [
        ("bool_contents", 1, F.TYPE_BOOL, MANY, None), ("int_contents", 2, F.TYPE_INT32, MANY, None),
        ("int64_contents", 3, F.TYPE_INT64, MANY, None), ("uint_contents", 4, F.TYPE_UINT32, MANY, None),
        ("uint64_contents", 5, F.TYPE_UINT64, MANY, None), ("fp32_contents", 6, F.TYPE_FLOAT, MANY, None),
        ("fp64_contents", 7, F.TYPE_DOUBLE, MANY, None), ("bytes_contents", 8, F.TYPE_BYTES, MANY, None)],
    "InferInputTensor": [
        ("name", 1, F.TYPE_STRING, ONE, None), ("datatype", 2, F.TYPE_STRING, ONE, None),
        ("shape", 3, F.TYPE_INT64, MANY, None), ("contents", 5, F.TYPE_MESSAGE, ONE, "InferTensorContents")],
    "InferRequestedOutputTensor": [("name", 1, F.TYPE_STRING, ONE, None)],
    "ModelInferRequest": [
        ("model_name", 1, F.TYPE_STRING, ONE, None), ("model_version", 2, F.TYPE_STRING, ONE, None),
        ("id", 3, F.TYPE_STRING, ONE, None), ("inputs", 5, F.TYPE_MESSAGE, MANY, "InferInputTensor"),
        ("outputs", 6, F.TYPE_MESSAGE, MANY, "InferRequestedOutputTensor"),
        ("raw_input_contents", 7, F.TYPE_BYTES, MANY, None)],
    "InferOutputTensor": [
        ("name", 1, F.TYPE_STRING, ONE, None), ("datatype", 2, F.TYPE_STRING, ONE, None),
        ("shape", 3, F.TYPE_INT64, MANY, None)],
    "ModelInferResponse": [
        ("model_name", 1, F.TYPE_STRING, ONE, None), ("model_version", 2, F.TYPE_STRING, ONE, None),
        ("id", 3, F.TYPE_STRING, ONE, None), ("outputs", 5, F.TYPE_MESSAGE, MANY, "InferOutputTensor"),
        ("raw_output_contents", 6, F.TYPE_BYTES, MANY, None)],
}

# In the protocol the tensor messages are nested in their request or response; a message's
# full name is not on the wire, so top-level ones of the same fields read the same bytes.


def _classes():
    proto = descriptor_pb2.FileDescriptorProto(
        name="mlambda/open_inference_grpc.proto", package="inference", syntax="proto3")
    for name, fields in MESSAGES.items():
        message = proto.message_type.add(name=name)
        for field, number, kind, label, type_name in fields:
            added = message.field.add(name=field, number=number, type=kind, label=label)
            if type_name:
                added.type_name = ".inference." + type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName("inference." + name))
            for name in MESSAGES}


M = _classes()

# Which repeated field of InferTensorContents holds each datatype.
CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP16": "fp32_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def _from_contents(contents, datatype, name):
    field = CONTENTS.get(datatype)
    if field is None:
        raise v2.BadRequest("input %r: datatype %s has no typed contents; send raw_input_contents" % (name, datatype))
    values = list(getattr(contents, field))
    if datatype == "BYTES":
        values = [v2.text_or_bytes(v) for v in values]
    return values


def _as_json(request):
    """The request in the JSON form of v2.py."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise v2.BadRequest("the request has %d inputs but %d raw_input_contents" % (len(request.inputs), len(raw)))
    inputs = []
    for index, tensor in enumerate(request.inputs):
        if raw:
            data = v2.from_raw(raw[index], tensor.datatype, tensor.name)
        else:
            data = _from_contents(tensor.contents, tensor.datatype, tensor.name)
        inputs.append({"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape), "data": data})
    json_request = {"inputs": inputs, "id": request.id}
    if request.outputs:
        json_request["outputs"] = [{"name": o.name} for o in request.outputs]
    return json_request


class Service:
    def __init__(self, model):
        self.model = model

    def _signature(self, name, version, context):
        if not self.model.ready:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the model is still loading")
        signature = self.model.signature(name)
        if signature is None or version not in ("", self.model.version):
            known = sorted({s.name for s in self.model.signatures} | {self.model.name})
            context.abort(grpc.StatusCode.NOT_FOUND, "no model %r version %r: this server has %s, version %s" % (
                name, version, ", ".join(known), self.model.version))
        return signature

    def ServerLive(self, request, context):
        return M["ServerLiveResponse"](live=True)

    def ServerReady(self, request, context):
        return M["ServerReadyResponse"](ready=self.model.ready)

    def ServerMetadata(self, request, context):
        return M["ServerMetadataResponse"](name="mlambda", version="1")

    def ModelReady(self, request, context):
        self._signature(request.name, request.version, context)
        return M["ModelReadyResponse"](ready=True)

    def ModelMetadata(self, request, context):
        signature = self._signature(request.name, request.version, context)
        metadata = self.model.metadata(signature)

        def tensors(fields):
            return [M["TensorMetadata"](name=f["name"], datatype=f["datatype"], shape=f["shape"]) for f in fields]

        return M["ModelMetadataResponse"](
            name=request.name, versions=metadata["versions"], platform=metadata["platform"],
            inputs=tensors(metadata["inputs"]), outputs=tensors(metadata["outputs"]))

    def ModelInfer(self, request, context):
        signature = self._signature(request.model_name, request.model_version, context)
        try:
            outputs = v2.infer(self.model, signature, _as_json(request))
        except v2.BadRequest as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except v2.ModelError as error:
            context.abort(grpc.StatusCode.INTERNAL, str(error))
        except Exception as error:  # the model's own error, reported to the caller
            traceback.print_exc()
            context.abort(grpc.StatusCode.INTERNAL, "%s: %s" % (type(error).__name__, error))
        response = M["ModelInferResponse"](
            model_name=request.model_name, model_version=self.model.version, id=request.id or str(uuid.uuid4()))
        for output in outputs:
            response.outputs.add(name=output["name"], datatype=output["datatype"], shape=output["shape"])
            response.raw_output_contents.append(v2.to_raw(output["data"], output["datatype"]))
        return response


def serve(model, host, port, max_request):
    """Starts the gRPC server (its own threads) and returns it."""
    service = Service(model)
    handlers = {}
    for method, (request, response) in {
        "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
        "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
        "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
        "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
        "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
        "ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
    }.items():
        handlers[method] = grpc.unary_unary_rpc_method_handler(
            getattr(service, method),
            request_deserializer=M[request].FromString,
            response_serializer=M[response].SerializeToString)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8),
        options=[("grpc.max_receive_message_length", max_request)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers),))
    bound = server.add_insecure_port("%s:%d" % (host, port))
    if not bound:
        print("gRPC: cannot listen on %s:%d" % (host, port), file=sys.stderr)
    server.start()
    return server
