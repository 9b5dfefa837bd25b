"""The model's contract, read from /model/contract.protobin (Hydrosphere's ModelContract).

The protobuf wire format is walked by hand so that the runtime needs no protobuf package:
ModelContract {model_name = 1, signatures = 2}, ModelSignature {signature_name = 1,
inputs = 2, outputs = 3}, ModelField {name = 1, shape = 2, subfields = 3, dtype = 4,
profile = 10}, TensorShapeProto {dim = 2 {size = 1}, unknown_rank = 3}.
"""

# tensorflow.DataType -> the Open Inference Protocol's datatype. Quantized types travel as
# their integer; complex numbers, resources, variants and maps have no tensor datatype.
DATATYPES = {
    1: "FP32", 2: "FP64", 3: "INT32", 4: "UINT8", 5: "INT16", 6: "INT8", 7: "BYTES",
    9: "INT64", 10: "BOOL", 11: "INT8", 12: "UINT8", 13: "INT32", 14: "BF16", 15: "INT16",
    16: "UINT16", 17: "UINT16", 19: "FP16", 22: "UINT32", 23: "UINT64",
}
DTYPE_NAMES = {8: "complex64", 18: "complex128", 20: "resource", 21: "variant", 27: "map", 0: "invalid"}


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


def _signed(value):
    return value - (1 << 64) if value >= 1 << 63 else value


class Field:
    def __init__(self, name, dtype, shape, nested):
        self.name = name
        self.dtype = dtype          # tensorflow.DataType number
        self.shape = shape          # list of sizes (-1 unknown), [] scalar, None any
        self.nested = nested        # True when the field has subfields

    @property
    def datatype(self):
        return DATATYPES.get(self.dtype)

    def problem(self):
        """Why the protocol cannot carry this field, or None."""
        if self.nested:
            return "field %r has sub-fields, which the Open Inference Protocol cannot carry" % self.name
        if self.datatype is None:
            return "field %r has type %s, which the Open Inference Protocol cannot carry" % (
                self.name, DTYPE_NAMES.get(self.dtype, self.dtype))
        return None

    def metadata(self):
        return {"name": self.name, "datatype": self.datatype or "BYTES",
                "shape": self.shape if self.shape is not None else [-1]}


def _field(data):
    name, dtype, shape, nested = "", 0, None, False
    for number, value in _fields(data):
        if number == 1:
            name = value.decode("utf-8")
        elif number == 2:
            dims, unknown_rank = [], False
            for n, v in _fields(value):
                if n == 2:
                    size = 0
                    for dn, dv in _fields(v):
                        if dn == 1:
                            size = _signed(dv)
                    dims.append(size)
                elif n == 3:
                    unknown_rank = bool(v)
            shape = None if unknown_rank else dims
        elif number == 3:
            nested = True
        elif number == 4:
            dtype = value
    return Field(name, dtype, shape, nested)


class Signature:
    def __init__(self, name, inputs, outputs):
        self.name = name
        self.inputs = inputs
        self.outputs = outputs


def read_contract(path):
    with open(path, "rb") as handle:
        data = handle.read()
    model_name, signatures = "", []
    for number, value in _fields(data):
        if number == 1:
            model_name = value.decode("utf-8")
        elif number == 2:
            name, inputs, outputs = "", [], []
            for n, v in _fields(value):
                if n == 1:
                    name = v.decode("utf-8")
                elif n == 2:
                    inputs.append(_field(v))
                elif n == 3:
                    outputs.append(_field(v))
            signatures.append(Signature(name, inputs, outputs))
    return model_name, signatures
