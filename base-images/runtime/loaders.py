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

    output_names = list(getattr(model, "output_names", None) or [])

    def run(inputs):
        # By name: a functional model takes a dict keyed by its Input layers' names.
        given = inputs if len(inputs) > 1 else next(iter(inputs.values()))
        result = model(given, training=False)
        if isinstance(result, dict):
            return {name: value.numpy() for name, value in result.items()}
        results = result if isinstance(result, (list, tuple)) else [result]
        names = output_names if len(output_names) == len(results) else [f.name for f in signature.outputs]
        return {name: value.numpy() for name, value in zip(names, results)}

    return {signature.name: run}


ESTIMATOR_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function",
                     "transform", "score_samples")


def _sklearn(files, signatures):
    """A pickled scikit-learn estimator (joblib or pickle): each signature is named after the
    method it calls, the contract's inputs are the columns of X (a DataFrame with the
    estimator's feature names when it was fitted on one), and the one output is the result."""
    import joblib
    import numpy
    found = [os.path.join(root, n) for root, _, names in os.walk(files)
             for n in names if n.endswith((".joblib", ".pkl", ".pickle"))]
    if len(found) != 1:
        raise LoadError("expected one .joblib/.pkl file in the model's files, found %d" % len(found))
    try:
        estimator = joblib.load(found[0])
    except Exception as error:
        raise LoadError("cannot load %s: %s" % (found[0], error))
    names = getattr(estimator, "feature_names_in_", None)
    functions = {}
    for signature in signatures:
        fields = [f.name for f in signature.inputs]
        if names is not None and len(fields) > 1 and sorted(fields) != sorted(names):
            raise LoadError("signature %r: the estimator was fitted on the columns %s; the contract's inputs are %s" % (
                signature.name, ", ".join(names), ", ".join(fields)))
    for signature in signatures:
        # MLflow's one signature is pyfunc's predict.
        method_name = "predict" if signature.name == "infer" else signature.name
        if method_name not in ESTIMATOR_METHODS or not hasattr(estimator, method_name):
            raise LoadError("signature %r: the estimator (%s) has no such method; name a signature after one of %s" % (
                signature.name, type(estimator).__name__,
                ", ".join(m for m in ESTIMATOR_METHODS if hasattr(estimator, m))))
        if len(signature.outputs) != 1:
            raise LoadError("signature %r: an estimator's method gives one output; the contract has %d" % (
                signature.name, len(signature.outputs)))

        def run(inputs, method=getattr(estimator, method_name), signature=signature):
            fields = [f.name for f in signature.inputs]
            if len(fields) == 1:
                matrix = numpy.asarray(inputs[fields[0]])
                features = matrix.reshape(-1, 1) if matrix.ndim == 1 else matrix
            else:
                columns = {name: numpy.asarray(inputs[name]).reshape(-1) for name in fields}
                if names is not None:
                    import pandas
                    features = pandas.DataFrame({name: columns[name] for name in names})
                else:
                    features = numpy.column_stack([columns[name] for name in fields])
            return {signature.outputs[0].name: method(features)}

        functions[signature.name] = run
    return functions


def _tflite(files, signatures):
    """A .tflite model on LiteRT: each SignatureDef by its key; a model with none has one
    signature (`serving_default`) over subgraph 0's inputs and outputs, in order."""
    from ai_edge_litert.interpreter import Interpreter
    path = _find(files, ".tflite")
    try:
        interpreter = Interpreter(model_path=path)
    except Exception as error:
        raise LoadError("LiteRT cannot load %s: %s" % (path, error))
    listed = interpreter.get_signature_list()
    import threading
    lock = threading.Lock()  # one interpreter, whose tensors each call sets and reads
    functions = {}
    if listed:
        for signature in signatures:
            if signature.name not in listed:
                raise LoadError("the model has no SignatureDef %r (it has %s)" % (
                    signature.name, ", ".join(sorted(listed))))
            runner = interpreter.get_signature_runner(signature.name)

            def run_signature(inputs, runner=runner):
                with lock:
                    return runner(**inputs)

            functions[signature.name] = run_signature
        return functions
    if len(signatures) != 1:
        raise LoadError("a model with no SignatureDef has one signature; the contract has %d" % len(signatures))
    signature = signatures[0]

    def run(inputs):
        with lock:
            details = interpreter.get_input_details()
            for field, detail in zip(signature.inputs, details):
                value = inputs[field.name]
                if list(detail["shape"]) != list(value.shape):
                    interpreter.resize_tensor_input(detail["index"], value.shape)
            interpreter.allocate_tensors()
            for field, detail in zip(signature.inputs, interpreter.get_input_details()):
                interpreter.set_tensor(detail["index"], inputs[field.name].astype(detail["dtype"]))
            interpreter.invoke()
            return {field.name: interpreter.get_tensor(detail["index"])
                    for field, detail in zip(signature.outputs, interpreter.get_output_details())}

    return {signature.name: run}


LOADERS = {"python": _python, "onnx": _onnx, "tensorflow": _tensorflow, "scikit-learn": _sklearn,
           "tflite": _tflite}
PLATFORMS = {"python": "python", "onnx": "onnxruntime_onnx", "tensorflow": "tensorflow_savedmodel",
             "scikit-learn": "sklearn", "tflite": "tensorflow_lite"}


def load(kind, files, signatures):
    loader = LOADERS.get(kind)
    if loader is None:
        raise LoadError("MLAMBDA_LOADER=%r is not one of %s" % (kind, ", ".join(sorted(LOADERS))))
    return loader(files, signatures)
