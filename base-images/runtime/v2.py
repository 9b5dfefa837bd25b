"""The Open Inference Protocol (KServe v2) over JSON: request tensors checked against the
contract and decoded, outputs encoded with the contract's names and datatypes; and the raw
form of a tensor (little-endian values; BYTES: each element a 4-byte length, then its bytes)
that the binary-data extension over HTTP and gRPC's raw contents share.

numpy is used when the image has it (a model's requirements, every framework runtime);
without it, tensors are nested lists and only their shapes are checked.

A BYTES element reaches the model as a str when it is UTF-8 text (JSON can carry nothing
else) and as bytes when it is not (a serialized tf.Example, an image), which only the raw form
can carry; TensorFlow takes either as a tf.string.
"""

import struct

try:
    import numpy
except ImportError:  # the plain python runtime: lists are enough for the standard library
    numpy = None

NUMPY_TYPES = {
    "BOOL": "bool", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BYTES": "object",
    # numpy has no bfloat16: such inputs reach the model as float32.
    "BF16": "float32",
}


# struct's letter for each fixed-size datatype (BF16 has none: it is refused in raw form).
RAW_FORMATS = {
    "BOOL": "?", "INT8": "b", "INT16": "h", "INT32": "i", "INT64": "q", "UINT8": "B",
    "UINT16": "H", "UINT32": "I", "UINT64": "Q", "FP16": "e", "FP32": "f", "FP64": "d",
}


class BadRequest(Exception):
    """A request the contract refuses: answered 400 with the message."""


def text_or_bytes(value):
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


def from_raw(raw, datatype, name):
    """A tensor's flat values from its raw form."""
    if datatype == "BYTES":
        values, offset = [], 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise BadRequest("input %r: its BYTES contents end inside a length" % name)
            (size,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + size > len(raw):
                raise BadRequest("input %r: a BYTES element runs past the end of its contents" % name)
            values.append(text_or_bytes(bytes(raw[offset:offset + size])))
            offset += size
        return values
    letter = RAW_FORMATS.get(datatype)
    if letter is None:
        raise BadRequest("input %r: raw contents of datatype %s are not supported; send it as JSON data" % (name, datatype))
    itemsize = struct.calcsize(letter)
    if len(raw) % itemsize:
        raise BadRequest("input %r: %d bytes are not a whole number of %s values" % (name, len(raw), datatype))
    if numpy is not None:
        return numpy.frombuffer(raw, dtype=numpy.dtype(NUMPY_TYPES[datatype]).newbyteorder("<")).tolist()
    return list(struct.unpack("<%d%s" % (len(raw) // itemsize, letter), raw))


def to_raw(data, datatype):
    """The raw form of an encoded output's flat data."""
    if datatype == "BYTES":
        encoded = [v if isinstance(v, bytes) else v.encode("utf-8") for v in data]
        return b"".join(struct.pack("<I", len(v)) + v for v in encoded)
    if numpy is not None:
        return numpy.asarray(data, dtype=numpy.dtype(NUMPY_TYPES[datatype]).newbyteorder("<")).tobytes()
    return struct.pack("<%d%s" % (len(data), RAW_FORMATS[datatype]), *data)


def json_data(output):
    """An encoded output as JSON carries it: BYTES elements as text, which bytes that are not
    UTF-8 cannot be (the caller asks for such an output in binary form)."""
    if output["datatype"] != "BYTES":
        return output
    data = []
    for value in output["data"]:
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(
                    "output %r holds bytes that are not UTF-8 text, which JSON cannot carry: ask for it "
                    "as binary data (parameters binary_data: true, tritonclient's default) or over gRPC"
                    % output["name"])
        data.append(value)
    return dict(output, data=data)


def _count(shape):
    total = 1
    for size in shape:
        total *= size
    return total


def _flatten(data):
    """Nested lists (the protocol allows them) as one row-major list."""
    if not isinstance(data, list):
        return [data]
    flat = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _nest(flat, shape):
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return list(flat)
    step = _count(shape[1:])
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def fits(shape, expected):
    """A request shape fits the contract's: same rank, equal sizes where the contract fixes one."""
    if expected is None:
        return True
    return len(shape) == len(expected) and all(e < 0 or e == s for s, e in zip(shape, expected))


def _shape_text(shape):
    return "any shape" if shape is None else "[%s]" % ", ".join(str(s) for s in shape)


def _check_value(value, datatype, name):
    if datatype == "BOOL":
        if not isinstance(value, bool):
            raise BadRequest("input %r: %r is not a BOOL" % (name, value))
    elif datatype == "BYTES":
        if not isinstance(value, (str, bytes)):
            raise BadRequest("input %r: %r is not a string (BYTES)" % (name, value))
    elif datatype.startswith(("INT", "UINT")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest("input %r: %r is not an integer (%s)" % (name, value, datatype))
        if datatype.startswith("UINT") and value < 0:
            raise BadRequest("input %r: %r is negative (%s)" % (name, value, datatype))
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest("input %r: %r is not a number (%s)" % (name, value, datatype))


def decode_inputs(request, signature):
    """{field name: array} from an inference request, or BadRequest naming the field."""
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise BadRequest("the request must be a JSON object with a list 'inputs'")
    expected = {field.name: field for field in signature.inputs}
    decoded = {}
    for tensor in request["inputs"]:
        if not isinstance(tensor, dict):
            raise BadRequest("each input must be an object with name, shape, datatype and data")
        name = tensor.get("name")
        field = expected.get(name)
        if field is None:
            raise BadRequest("unknown input %r: %s takes %s" % (
                name, signature.name, ", ".join(repr(f) for f in expected) or "no input"))
        if name in decoded:
            raise BadRequest("input %r is given twice" % name)
        datatype, shape, data = tensor.get("datatype"), tensor.get("shape"), tensor.get("data")
        if datatype != field.datatype:
            raise BadRequest("input %r: datatype %s, but the contract says %s" % (name, datatype, field.datatype))
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            raise BadRequest("input %r: shape must be a list of sizes, got %r" % (name, shape))
        if not fits(shape, field.shape):
            raise BadRequest("input %r: shape %s does not fit the contract's %s" % (
                name, _shape_text(shape), _shape_text(field.shape)))
        if data is None:
            raise BadRequest("input %r has no data" % name)
        flat = _flatten(data)
        if len(flat) != _count(shape):
            raise BadRequest("input %r: shape %s needs %d values, got %d" % (
                name, _shape_text(shape), _count(shape), len(flat)))
        for value in flat:
            _check_value(value, datatype, name)
        if numpy is not None:
            array = numpy.array(flat, dtype=NUMPY_TYPES[datatype]).reshape(shape)
            decoded[name] = array
        else:
            decoded[name] = _nest(flat, shape)
    missing = [f.name for f in signature.inputs if f.name not in decoded]
    if missing:
        raise BadRequest("missing input%s %s for %s" % (
            "s" if len(missing) > 1 else "", ", ".join(repr(m) for m in missing), signature.name))
    return decoded


class ModelError(Exception):
    """The model's answer does not match its contract: a 500, the model's fault."""


def _shape_of(value):
    shape = []
    while isinstance(value, (list, tuple)):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _element(value):
    """A BYTES output element: bytes stay bytes (JSON turns them to text when they are),
    anything else is its text."""
    return value if isinstance(value, (bytes, str)) else str(value)


def encode_output(name, value, field):
    datatype = field.datatype
    if numpy is not None:
        array = numpy.asarray(value)
        shape = list(array.shape)
        if datatype == "BYTES":
            data = [_element(v) for v in array.reshape(-1).tolist()]
        else:
            data = array.astype(NUMPY_TYPES[datatype]).reshape(-1).tolist()
    else:
        shape = _shape_of(value)
        data = _flatten(value if isinstance(value, list) else [value] if shape else value)
        if datatype == "BYTES":
            data = [_element(v) for v in data]
    if not fits(shape, field.shape):
        raise ModelError("output %r has shape %s, but the contract says %s" % (
            name, _shape_text(shape), _shape_text(field.shape)))
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def encode_outputs(outputs, signature, wanted=None):
    """The protocol's outputs from the model's {name: value}, in the contract's order."""
    if not isinstance(outputs, dict):
        raise ModelError("the model returned %s, not a mapping of output names to values" % type(outputs).__name__)
    known = {field.name for field in signature.outputs}
    unknown = [name for name in outputs if name not in known]
    if unknown:
        raise ModelError("the model returned %s, which the contract of %s does not name" % (
            ", ".join(repr(u) for u in unknown), signature.name))
    encoded = []
    for field in signature.outputs:
        if wanted is not None and field.name not in wanted:
            continue
        if field.name not in outputs:
            raise ModelError("the model returned no output %r" % field.name)
        encoded.append(encode_output(field.name, outputs[field.name], field))
    return encoded


def infer(model, signature, request):
    """The protocol's outputs of `signature` for a request in the JSON form (the gRPC server
    brings its requests to that form too): BadRequest for what the contract refuses,
    ModelError or the model's own exception for the rest."""
    inputs = decode_inputs(request, signature)
    wanted = None
    if isinstance(request.get("outputs"), list):
        wanted = {o.get("name") for o in request["outputs"] if isinstance(o, dict)}
    outputs = model.functions[signature.name](inputs)
    return encode_outputs(outputs, signature, wanted)


# The binary-data extension of the protocol over HTTP (Triton's `binary_tensor_data`, what
# tritonclient.http sends and asks for by default): the body is the JSON request, of the length
# the `Inference-Header-Content-Length` header gives, followed by the raw form of each input
# whose parameters give a `binary_data_size`, in the order of the inputs.

def _parameters(entry):
    parameters = entry.get("parameters") if isinstance(entry, dict) else None
    return parameters if isinstance(parameters, dict) else {}


def attach_binary(request, binary):
    """Fills the `data` of each input that is in binary form from the bytes after the JSON."""
    offset = 0
    for tensor in request.get("inputs") or []:
        size = _parameters(tensor).get("binary_data_size")
        if size is None:
            continue
        name = tensor.get("name")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BadRequest("input %r: binary_data_size must be a number of bytes, got %r" % (name, size))
        if offset + size > len(binary):
            raise BadRequest("input %r: binary_data_size %d runs past the %d bytes after the JSON" % (
                name, size, len(binary)))
        if "data" in tensor:
            raise BadRequest("input %r has both data and binary_data_size" % name)
        tensor["data"] = from_raw(binary[offset:offset + size], tensor.get("datatype"), name)
        offset += size
    if offset != len(binary):
        raise BadRequest("the request has %d bytes after its JSON, but its inputs' binary_data_size add up to %d" % (
            len(binary), offset))


def wants_binary(request, name):
    """Whether output `name` goes back in binary form: asked for by the output's own
    parameters, else by the request's `binary_data_output`."""
    for entry in request.get("outputs") or []:
        if isinstance(entry, dict) and entry.get("name") == name and "binary_data" in _parameters(entry):
            return _parameters(entry)["binary_data"] is True
    return _parameters(request).get("binary_data_output") is True


def split_binary(request, encoded):
    """The response's outputs (JSON ones as JSON carries them, binary ones with their
    binary_data_size) and the bytes that follow the response's JSON (None: no output is
    binary, the response is plain JSON)."""
    outputs, parts = [], []
    for output in encoded:
        if wants_binary(request, output["name"]):
            raw = to_raw(output["data"], output["datatype"])
            output = {k: v for k, v in output.items() if k != "data"}
            output["parameters"] = {"binary_data_size": len(raw)}
            parts.append(raw)
        else:
            output = json_data(output)
        outputs.append(output)
    return outputs, b"".join(parts) if parts else None
