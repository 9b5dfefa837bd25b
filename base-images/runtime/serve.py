"""mlambda's model server: the model in /model served over the Open Inference Protocol
(KServe v2, HTTP/REST, port 8080 as KServe expects of a custom predictor).

Each signature of the contract is a model named by the signature; the model's own name is
an alias of its default signature (`serving_default` when there is one, else the first).
Requests are checked against the contract before the model sees them (400 naming the
field); the model's own failures are 500 with its message. `--check` loads the model, prints
what was found and exits: non-zero when a signature has no implementation.
"""

import argparse
import json
import os
import signal
import sys
import threading
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from contract import read_contract  # noqa: E402
import loaders  # noqa: E402
import v2  # noqa: E402

MODEL_DIR = os.environ.get("MODEL_DIR", "/model")


class Model:
    def __init__(self, kind):
        self.kind = kind
        self.name, self.signatures = read_contract(os.path.join(MODEL_DIR, "contract.protobin"))
        self.name = os.environ.get("MODEL_NAME") or self.name
        self.version = os.environ.get("MODEL_VERSION", "1")
        problems = [p for s in self.signatures for f in s.inputs + s.outputs for p in [f.problem()] if p]
        if problems:
            raise loaders.LoadError("; ".join(problems))
        if not self.signatures:
            raise loaders.LoadError("the contract has no signature")
        self.functions = loaders.load(kind, os.path.join(MODEL_DIR, "files"), self.signatures)
        names = [s.name for s in self.signatures]
        self.default = "serving_default" if "serving_default" in names else names[0]

    def signature(self, name):
        if name == self.name and name not in {s.name for s in self.signatures}:
            name = self.default
        return next((s for s in self.signatures if s.name == name), None)

    def metadata(self, signature):
        return {
            "name": signature.name,
            "versions": [self.version],
            "platform": loaders.PLATFORMS.get(self.kind, self.kind),
            "inputs": [f.metadata() for f in signature.inputs],
            "outputs": [f.metadata() for f in signature.outputs],
        }


class Loading:
    """The model while it loads in the background, then the model itself (its attributes are
    forwarded): the server answers liveness at once and readiness once the model is there."""

    def __init__(self):
        self._model = None

    @property
    def ready(self):
        return self._model is not None

    def set(self, model):
        self._model = model

    def __getattr__(self, name):
        return getattr(self.__dict__["_model"], name)


def make_handler(model, max_request):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):
            sys.stderr.write("%s %s\n" % (self.address_string(), format % args))

        def _reply(self, status, body, binary=None):
            payload = json.dumps(body).encode("utf-8")
            self.send_response(status)
            if binary is not None:
                # The binary-data extension: the JSON, then the outputs' raw bytes.
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Inference-Header-Content-Length", str(len(payload)))
            else:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload) + len(binary or b"")))
            self.end_headers()
            self.wfile.write(payload)
            if binary:
                self.wfile.write(binary)

        def _route(self):
            """(signature or None, how the path names it, the rest of the path) for
            /v2/models/{name}[/versions/{version}]/...: `kind` is None when the path is not a
            model's, "version" when it names another version than the image's."""
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            if len(parts) < 3 or parts[:2] != ["v2", "models"]:
                return None, None, parts
            signature = model.signature(parts[2])
            rest = parts[3:]
            if len(rest) >= 2 and rest[0] == "versions":
                if rest[1] != model.version:
                    return signature, "version", rest
                rest = rest[2:]
            return signature, "model", rest

        def _requested(self):
            return [p for p in self.path.split("?")[0].split("/") if p][2]

        def do_GET(self):
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            if parts == ["v2"]:
                return self._reply(200, {"name": "mlambda", "version": "1", "extensions": ["binary_tensor_data"]})
            if parts == ["v2", "health", "live"]:
                return self._reply(200, {"live": True})
            if parts == ["v2", "health", "ready"]:
                # 503 until loaded, as KServe answers, so that a readiness probe waits.
                return self._reply(200 if model.ready else 503, {"ready": model.ready})
            if not model.ready:
                return self._reply(503, {"error": "the model is still loading"})
            signature, kind, rest = self._route()
            if kind is None:
                return self._reply(404, {"error": "no such path: %s" % self.path})
            if signature is None or kind == "version":
                return self._not_found()
            if rest == []:
                return self._reply(200, dict(model.metadata(signature), name=self._requested()))
            if rest == ["ready"]:
                return self._reply(200, {"name": signature.name, "ready": True})
            return self._reply(404, {"error": "no such path: %s" % self.path})

        def _not_found(self):
            known = sorted({s.name for s in model.signatures} | {model.name})
            return self._reply(404, {"error": "no model at %s: this server has %s, version %s" % (
                self.path, ", ".join(known), model.version)})

        def do_POST(self):
            if not model.ready:
                return self._reply(503, {"error": "the model is still loading"})
            signature, kind, rest = self._route()
            if kind is None:
                return self._reply(404, {"error": "no such path: %s" % self.path})
            if signature is None or kind == "version":
                return self._not_found()
            if rest != ["infer"]:
                return self._reply(404, {"error": "no such path: %s" % self.path})
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                return self._reply(400, {"error": "Content-Length is not a number"})
            if length > max_request:
                self.close_connection = True
                return self._reply(413, {"error": "the request has %d bytes; this server takes %d (--max-request)" % (length, max_request)})
            body = self.rfile.read(length)
            header_length = self.headers.get("Inference-Header-Content-Length")
            json_length = len(body)
            if header_length is not None:
                if not header_length.isdigit() or int(header_length) > len(body):
                    return self._reply(400, {"error": "Inference-Header-Content-Length %r is not a length within the "
                                                      "request's %d bytes" % (header_length, len(body))})
                json_length = int(header_length)
            try:
                request = json.loads(body[:json_length] or b"null")
            except ValueError as error:
                return self._reply(400, {"error": "the request is not JSON: %s" % error})
            try:
                if isinstance(request, dict):
                    v2.attach_binary(request, body[json_length:])
                elif json_length < len(body):
                    raise v2.BadRequest("binary data follows a request that is not a JSON object")
                encoded = v2.infer(model, signature, request)
                outputs, binary = v2.split_binary(request, encoded)
            except v2.BadRequest as error:
                return self._reply(400, {"error": str(error)})
            except v2.ModelError as error:
                return self._reply(500, {"error": str(error)})
            except Exception as error:  # the model's own error, reported to the caller
                traceback.print_exc()
                return self._reply(500, {"error": "%s: %s" % (type(error).__name__, error)})
            answer = {"model_name": self._requested(), "model_version": model.version,
                      "id": request.get("id") or str(uuid.uuid4()), "outputs": outputs}
            return self._reply(200, answer, binary)

    return Handler


def start_grpc(model, host, port, max_request):
    """The protocol over gRPC too, where the image has grpcio and protobuf (the tensorflow
    runtime); elsewhere HTTP alone, and the log says so."""
    try:
        import grpc_v2
    except ImportError as missing:
        print("gRPC off: this image has no %s" % missing.name, file=sys.stderr)
        return None
    server = grpc_v2.serve(model, host, port, max_request)
    print("gRPC (inference.GRPCInferenceService) on %s:%d" % (host, port), file=sys.stderr)
    return server


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--max-request", type=int, default=64 << 20, help="the largest request body, in bytes")
    parser.add_argument("--grpc-port", type=int, default=int(os.environ.get("GRPC_PORT", "8081")),
                        help="the gRPC port of the protocol, when the image has grpcio (0: none)")
    parser.add_argument("--check", action="store_true", help="load the model, print what was found, exit")
    args = parser.parse_args()
    kind = os.environ.get("MLAMBDA_LOADER", "python")
    if args.check:
        try:
            model = Model(kind)
        except loaders.LoadError as error:
            print(json.dumps({"loaded": False, "error": str(error)}))
            print("mlambda runtime: the model cannot be served: %s" % error, file=sys.stderr)
            return 1
        print(json.dumps({
            "loaded": True, "model": model.name, "version": model.version, "default": model.default,
            "signatures": {s.name: model.metadata(s) for s in model.signatures},
        }))
        return 0
    loading = Loading()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(loading, args.max_request))

    def load():
        try:
            loading.set(Model(kind))
        except loaders.LoadError as error:
            print("mlambda runtime: the model cannot be served: %s" % error, file=sys.stderr)
            os._exit(1)
        except BaseException:  # the framework's own failure: said, and the server stops
            traceback.print_exc()
            os._exit(1)
        print("serving %s (%s) on %s:%d" % (loading.name, ", ".join(s.name for s in loading.signatures),
                                              args.host, args.port), file=sys.stderr)

    threading.Thread(target=load, daemon=True).start()
    # SIGTERM is how Kubernetes (KServe), podman stop and `kill` end a container, and as its
    # PID 1 this process would ignore it without a handler: the server stops and exits 0.
    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    # Held until the process ends: a gRPC server that is collected stops serving.
    grpc_server = start_grpc(loading, args.host, args.grpc_port, args.max_request) if args.grpc_port else None
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C
        pass
    if grpc_server is not None:
        grpc_server.stop(grace=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
