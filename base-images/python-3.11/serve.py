"""mlambda's Python runtime: serves the model in /model over HTTP.

It reads the contract from /model/contract.protobin, imports the model's func_main from
/model/files/src, and answers POST /<signature> with the function's result. `--check` only
loads both and prints what it found, so a build can prove the image works without serving.
"""

import argparse
import importlib
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL_DIR = os.environ.get("MODEL_DIR", "/model")


def _varint(data, pos):
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data):
    """The (number, value) pairs of one protobuf message; values are ints or bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError("unsupported wire type %d" % wire)
        yield number, value


def read_contract(path):
    """ModelContract: model_name = 1, signatures = 2 {signature_name = 1, inputs = 2, outputs = 3}."""
    with open(path, "rb") as handle:
        data = handle.read()
    contract = {"model_name": "", "signatures": []}
    for number, value in _fields(data):
        if number == 1:
            contract["model_name"] = value.decode("utf-8")
        elif number == 2:
            signature = {"name": "", "inputs": [], "outputs": []}
            for n, v in _fields(value):
                if n == 1:
                    signature["name"] = v.decode("utf-8")
                elif n in (2, 3):
                    name = next((fv.decode("utf-8") for fn, fv in _fields(v) if fn == 1), "")
                    signature["inputs" if n == 2 else "outputs"].append(name)
            contract["signatures"].append(signature)
    return contract


def load_model():
    contract = read_contract(os.path.join(MODEL_DIR, "contract.protobin"))
    source = os.path.join(MODEL_DIR, "files", "src")
    sys.path.insert(0, source)
    module = importlib.import_module("func_main") if os.path.exists(os.path.join(source, "func_main.py")) else None
    functions = {}
    for signature in contract["signatures"]:
        function = getattr(module, signature["name"], None) if module else None
        if function is not None:
            functions[signature["name"]] = function
    return contract, functions


def make_handler(contract, functions):
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status, body):
            payload = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self):
            self._reply(200, contract)

        def do_POST(self):
            name = self.path.strip("/")
            function = functions.get(name)
            if function is None:
                self._reply(404, {"error": "no signature %r; known: %s" % (name, sorted(functions))})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
                inputs = json.loads(self.rfile.read(length) or b"{}")
                self._reply(200, function(**inputs))
            except Exception as error:  # the model's own error, reported to the caller
                self._reply(500, {"error": "%s: %s" % (type(error).__name__, error)})

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--check", action="store_true", help="load the model, print what was found, exit")
    args = parser.parse_args()
    contract, functions = load_model()
    if args.check:
        missing = [s["name"] for s in contract["signatures"] if s["name"] not in functions]
        print(json.dumps({"contract": contract, "functions": sorted(functions), "missing": missing}))
        return 1 if missing else 0
    server = ThreadingHTTPServer((args.host, args.port), make_handler(contract, functions))
    print("serving %s on %s:%d" % (contract["model_name"], args.host, args.port))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
