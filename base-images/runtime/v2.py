"""The Open Inference Protocol (KServe v2) over JSON: request tensors checked against the
contract and decoded, outputs encoded with the contract's names and datatypes.

numpy is used when the image has it (a model's requirements, every framework runtime);
without it, tensors are nested lists and only their shapes are checked.
"""

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


class BadRequest(Exception):
    """A request the contract refuses: answered 400 with the message."""


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
        if not isinstance(value, str):
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


def encode_output(name, value, field):
    datatype = field.datatype
    if numpy is not None:
        array = numpy.asarray(value)
        shape = list(array.shape)
        if datatype == "BYTES":
            data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.reshape(-1).tolist()]
        else:
            data = array.astype(NUMPY_TYPES[datatype]).reshape(-1).tolist()
    else:
        shape = _shape_of(value)
        data = _flatten(value if isinstance(value, list) else [value] if shape else value)
        if datatype == "BYTES":
            data = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in data]
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
