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


def _mlflow_file(files, flavor, key):
    """The file an MLflow folder's MLmodel names for `flavor` (e.g. sklearn's `pickled_model`),
    read without a YAML library (the runtimes have none): None when there is no MLmodel or no
    such entry. mlflow itself is not installed: the flavor's file is loaded directly."""
    path = os.path.join(files, "MLmodel")
    if not os.path.isfile(path):
        return None
    section = None
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            indent = len(line) - len(line.lstrip(" "))
            text = line.strip()
            if indent == 2 and text.endswith(":"):
                section = text[:-1]
            elif indent == 4 and section == flavor and text.startswith(key + ":"):
                value = text[len(key) + 1:].strip().strip("'\"")
                return os.path.join(files, value) if value and value != "null" else None
    return None


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
    path = _mlflow_file(files, "onnx", "data") or _find(files, ".onnx")
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
        # The model's own output names when the contract uses them (a contract inferred from
        # the .keras file), else the contract's in order (one from an MLflow signature, which
        # names a lone tensor `output`).
        contract_names = [f.name for f in signature.outputs]
        names = output_names if sorted(output_names) == sorted(contract_names) else contract_names
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
    named = _mlflow_file(files, "sklearn", "pickled_model")
    found = [named] if named else [os.path.join(root, n) for root, _, names in os.walk(files)
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


def _java_home():
    """Debian's JRE where no maintainer script made /usr/bin/java: its folder by name."""
    import glob
    found = sorted(glob.glob("/usr/lib/jvm/java-*-openjdk-*/bin/java"))
    if found:
        return os.path.dirname(os.path.dirname(found[-1]))
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    import shutil
    java = shutil.which("java")
    if java is None:
        raise LoadError("no Java: neither /usr/lib/jvm/java-*-openjdk-* nor JAVA_HOME nor java on PATH")
    return os.path.dirname(os.path.dirname(os.path.realpath(java)))


def _spark_gateway(conf):
    """Starts Spark's driver JVM as pyspark's bin/spark-submit would, without its bash scripts:
    Spark's launcher (org.apache.spark.launcher.Main) says the java command, which is run with
    pyspark's connection-file handshake; pyspark then attaches to it (PYSPARK_GATEWAY_PORT)."""
    import glob
    import struct
    import subprocess
    import tempfile
    import time
    import pyspark
    home = os.path.dirname(pyspark.__file__)
    jars = os.path.join(home, "jars")
    core = glob.glob(os.path.join(jars, "spark-core_*.jar"))
    if not core:
        raise LoadError("pyspark has no Spark jars in %s" % jars)
    java_home = _java_home()
    env = dict(os.environ, SPARK_HOME=home, JAVA_HOME=java_home, SPARK_CONNECT_MODE="0",
               SPARK_SCALA_VERSION=os.path.basename(core[0]).split("_")[1].split("-")[0])
    java = os.path.join(java_home, "bin", "java")
    submit = ["org.apache.spark.deploy.SparkSubmit"]
    for key, value in conf:
        submit += ["--conf", "%s=%s" % (key, value)]
    launcher = subprocess.run([java, "-Xmx128m", "-cp", jars + "/*", "org.apache.spark.launcher.Main"]
                              + submit + ["pyspark-shell"], env=env, capture_output=True)
    parts = [p.decode("utf-8", "replace").strip("\n") for p in launcher.stdout.split(b"\0")]
    start = next((i for i, p in enumerate(parts) if p.endswith("/bin/java")), None)
    if launcher.returncode != 0 or start is None:
        raise LoadError("Spark's launcher failed (%s): %s" % (
            java, (launcher.stderr or launcher.stdout).decode("utf-8", "replace").strip()[-2000:]))
    command = [p for p in parts[start:] if p]
    info_dir = tempfile.mkdtemp()
    info = os.path.join(info_dir, "conn")
    env["_PYSPARK_DRIVER_CONN_INFO_PATH"] = info
    # The JVM ends when this pipe closes, i.e. with the server. Its messages go on to our
    # stderr; the last ones are kept to say why it stopped, if it does.
    jvm = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    last = []

    def relay():
        for line in jvm.stderr:
            sys.stderr.write(line.decode("utf-8", "replace"))
            if not line.lstrip().startswith(b"at "):
                last[:] = (last + [line.decode("utf-8", "replace").rstrip()])[-5:]

    import threading
    relaying = threading.Thread(target=relay, daemon=True)
    relaying.start()
    while jvm.poll() is None and not os.path.isfile(info):
        time.sleep(0.05)
    if not os.path.isfile(info):
        relaying.join(2)
        raise LoadError("Spark's JVM exited (status %s) before it was ready: %s" % (
            jvm.returncode, " / ".join(last) or "no message"))
    time.sleep(0.05)  # the file is renamed into place whole, but give the writer its close
    with open(info, "rb") as handle:
        port = struct.unpack("!i", handle.read(4))[0]
        length = struct.unpack("!i", handle.read(4))[0]
        secret = handle.read(length).decode("utf-8")
    os.remove(info)
    os.rmdir(info_dir)
    os.environ["PYSPARK_GATEWAY_PORT"] = str(port)
    os.environ["PYSPARK_GATEWAY_SECRET"] = secret
    return jvm


SPARK_TYPES = {"BYTES": "StringType", "FP64": "DoubleType", "FP32": "FloatType", "INT64": "LongType",
               "INT32": "IntegerType", "INT16": "ShortType", "INT8": "ByteType", "BOOL": "BooleanType",
               "UINT8": "ShortType", "UINT16": "IntegerType", "UINT32": "LongType"}


def _spark(files, signatures):
    """A Spark ML PipelineModel folder (metadata/ and stages/) in a local Spark session: each
    request is one row, a DataFrame with the contract's inputs as columns (a scalar field is a
    value, a 1-D one an array), transformed; the outputs are the contract's columns of the
    result (vectors as arrays)."""
    import pyspark.sql.types as types
    roots = sorted((root for root, dirs, _ in os.walk(files) if "metadata" in dirs and "stages" in dirs),
                   key=lambda r: (r.count(os.sep), r))
    if not roots:
        raise LoadError("no Spark ML pipeline (a folder with metadata/ and stages/) in the model's files (%s)" % files)
    conf = [("spark.master", "local[1]"), ("spark.app.name", "mlambda"),
            ("spark.ui.enabled", "false"), ("spark.ui.showConsoleProgress", "false"),
            ("spark.driver.memory", os.environ.get("SPARK_DRIVER_MEMORY", "512m")),
            ("spark.driver.host", "127.0.0.1"), ("spark.driver.bindAddress", "127.0.0.1"),
            ("spark.sql.shuffle.partitions", "1"),
            ("spark.sql.warehouse.dir", "/tmp/spark-warehouse"),
            ("spark.jars.ivy", "/tmp/.ivy2"),
            # A user with no /etc/passwd entry has no home ('?'), where Spark would put its Ivy cache.
            ("spark.driver.extraJavaOptions", "-Djava.io.tmpdir=/tmp -Duser.home=/tmp")]
    import pwd
    try:
        pwd.getpwuid(os.getuid())
    except KeyError:
        raise LoadError("Spark needs the user to have an /etc/passwd entry (Hadoop asks for its name); uid %d has none: run as root, 1000 or 65534, the ones this image names" % os.getuid())
    jvm = _spark_gateway(conf)
    from pyspark.sql import SparkSession
    from pyspark.ml import PipelineModel
    builder = SparkSession.builder
    for key, value in conf:
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    try:
        pipeline = PipelineModel.load(roots[0])
    except Exception as error:
        raise LoadError("Spark cannot load the pipeline in %s: %s" % (roots[0], str(error).strip()[:2000]))
    functions = {}
    for signature in signatures:
        fields = []
        for field in signature.inputs:
            spark_type = SPARK_TYPES.get(field.datatype)
            if spark_type is None:
                raise LoadError("signature %r: input %r is %s, which has no Spark column type" % (
                    signature.name, field.name, field.datatype))
            element = getattr(types, spark_type)()
            vector = field.shape is not None and len(field.shape) == 1
            fields.append(types.StructField(field.name, types.ArrayType(element) if vector else element))
        schema = types.StructType(fields)

        def run(inputs, schema=schema, signature=signature, jvm=jvm):
            row = []
            for field in signature.inputs:
                value = inputs[field.name]
                value = value.tolist() if hasattr(value, "tolist") else value
                if isinstance(value, list) and not (field.shape is not None and len(field.shape) == 1):
                    if len(value) != 1:
                        raise ValueError("input %r: one row per request, so one value, got %d" % (field.name, len(value)))
                    value = value[0]
                row.append(value.decode("utf-8") if isinstance(value, bytes) else value)
            result = pipeline.transform(session.createDataFrame([tuple(row)], schema))
            wanted = [f.name for f in signature.outputs if f.name in result.columns]
            answer = result.select(*wanted).collect()[0].asDict() if wanted else {}
            return {name: (value.toArray() if hasattr(value, "toArray") else value)
                    for name, value in answer.items()}

        functions[signature.name] = run
    return functions


LOADERS = {"python": _python, "onnx": _onnx, "tensorflow": _tensorflow, "scikit-learn": _sklearn,
           "tflite": _tflite, "spark": _spark}
PLATFORMS = {"python": "python", "onnx": "onnxruntime_onnx", "tensorflow": "tensorflow_savedmodel",
             "scikit-learn": "sklearn", "tflite": "tensorflow_lite", "spark": "spark"}


def load(kind, files, signatures):
    loader = LOADERS.get(kind)
    if loader is None:
        raise LoadError("MLAMBDA_LOADER=%r is not one of %s" % (kind, ", ".join(sorted(LOADERS))))
    return loader(files, signatures)
