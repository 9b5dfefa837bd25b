"""How each runtime loads a model and calls one of its signatures. A loader is chosen by the
image's MLAMBDA_LOADER (set by the runtime); `load` returns {signature name: callable taking
{input name: array} and returning {output name: value}}, and says what it could not find.
"""

import importlib
import os
import sys


class LoadError(Exception):
    """The model cannot be served: the message says what is missing and where."""


def _python(files, signatures):
    """Hydrosphere's Python model: src/func_main.py with one function per signature."""
    source = os.path.join(files, "src")
    if not os.path.exists(os.path.join(source, "func_main.py")):
        raise LoadError("no src/func_main.py in the model's files (%s)" % files)
    sys.path.insert(0, source)
    try:
        module = importlib.import_module("func_main")
    except ImportError as error:
        raise LoadError("src/func_main.py cannot be imported: %s (is the package in requirements.txt?)" % error)
    functions = {}
    for signature in signatures:
        function = getattr(module, signature.name, None)
        if function is None:
            raise LoadError("src/func_main.py has no function %r for the signature %r" % (signature.name, signature.name))
        functions[signature.name] = (lambda f: lambda inputs: f(**inputs))(function)
    return functions


def _find(files, suffix):
    found = []
    for root, _, names in os.walk(files):
        found.extend(os.path.join(root, n) for n in names if n.endswith(suffix))
    if len(found) != 1:
        raise LoadError("expected one %s file in the model's files, found %d" % (suffix, len(found)))
    return found[0]


def _onnx(files, signatures):
    """An ONNX model on onnxruntime: one signature, the graph's inputs and outputs."""
    import onnxruntime
    path = _find(files, ".onnx")
    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise LoadError("onnxruntime cannot load %s: %s" % (path, error))
    names = [output.name for output in session.get_outputs()]

    def run(inputs):
        return dict(zip(names, session.run(names, inputs)))

    return {signature.name: run for signature in signatures}


def _tensorflow(files, signatures):
    """A SavedModel (every signature of the contract, by name) or a Keras .keras/.h5 file
    (one signature, the model's inputs and outputs in order) on TensorFlow."""
    import tensorflow as tf
    saved = sorted(root for root, _, names in os.walk(files)
                   if "saved_model.pb" in names or "saved_model.pbtxt" in names)
    if saved:
        try:
            model = tf.saved_model.load(saved[0])
        except Exception as error:
            raise LoadError("TensorFlow cannot load the SavedModel in %s: %s" % (saved[0], error))
        functions = {}
        for signature in signatures:
            function = model.signatures.get(signature.name)
            if function is None:
                raise LoadError("the SavedModel has no signature %r (it has %s)" % (
                    signature.name, ", ".join(sorted(model.signatures.keys()))))

            # `model` is kept by each function: it owns the variables the signatures read.
            def run(inputs, function=function, model=model):
                tensors = {name: tf.constant(value) for name, value in inputs.items()}
                return {name: value.numpy() for name, value in function(**tensors).items()}

            functions[signature.name] = run
        return functions
    keras_files = [os.path.join(root, n) for root, _, names in os.walk(files)
                   for n in names if n.endswith((".keras", ".h5", ".hdf5"))]
    if len(keras_files) != 1:
        raise LoadError("expected a SavedModel or one .keras/.h5 file in the model's files, found %d Keras files" % len(keras_files))
    try:
        model = tf.keras.models.load_model(keras_files[0], compile=False)
    except Exception as error:
        raise LoadError("Keras cannot load %s: %s" % (keras_files[0], error))
    if len(signatures) != 1:
        raise LoadError("a Keras model has one signature; the contract has %d" % len(signatures))
    signature = signatures[0]

    def run(inputs):
        ordered = [inputs[field.name] for field in signature.inputs]
        result = model(ordered if len(ordered) > 1 else ordered[0], training=False)
        results = result if isinstance(result, (list, tuple)) else [result]
        return {field.name: value.numpy() for field, value in zip(signature.outputs, results)}

    return {signature.name: run}


LOADERS = {"python": _python, "onnx": _onnx, "tensorflow": _tensorflow}
PLATFORMS = {"python": "python", "onnx": "onnxruntime_onnx", "tensorflow": "tensorflow_savedmodel"}


def load(kind, files, signatures):
    loader = LOADERS.get(kind)
    if loader is None:
        raise LoadError("MLAMBDA_LOADER=%r is not one of %s" % (kind, ", ".join(sorted(LOADERS))))
    return loader(files, signatures)
