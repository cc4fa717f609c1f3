"""The ``tfos`` backend and its TensorFlowOnSpark adapter: the host-address patch in the driver and
in Spark's Python workers (no traffic to outside addresses, ever), the ``pkg_resources`` shim,
device pinning, and (slow) ``jobs/train.py --backend tfos`` training a Keras model with
``TFCluster.run(..., InputMode.SPARK)`` that is registered as @challenger and gated, for a binary model and
(from a model spec) regression and multiclass models scored on a fresh sample against the naive baselines."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from lakeloop.train import gpu, tfos_adapter
from lakeloop.train.tfos import BACKEND, num_executors

from tests.test_train_torch import check_registered_model, check_task_model, run_train_job, train_task_model


def _is_local(address) -> bool:
    if not isinstance(address, tuple):
        return True  # unix socket paths
    try:
        return ipaddress.ip_address(address[0]).is_loopback
    except ValueError:
        return address[0] == "localhost"


@pytest.fixture
def outside_connects(monkeypatch):
    """Make every connect to a non-loopback address in this process fail; yields the attempts."""
    attempts = []
    original = socket.socket.connect

    def guarded(self, address):
        if not _is_local(address):
            attempts.append(address)
            raise OSError(f"test forbids connecting to {address}")
        return original(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


def test_driver_address_lookup_never_leaves_the_host(outside_connects):
    tfos_adapter.install("127.0.0.1")
    from tensorflowonspark import reservation, util

    assert util.get_ip_address() == "127.0.0.1"
    assert reservation.Server(1).get_server_ip() == "127.0.0.1"
    assert outside_connects == []


def test_pkg_resources_shim_answers_what_tfos_asks():
    """TFoS reads ``get_distribution("tensorflow")`` and falls back to ``tensorflow-cpu``."""
    import importlib.metadata

    tfos_adapter.install()
    import pkg_resources

    assert pkg_resources.get_distribution("tensorflow-cpu").version == importlib.metadata.version("tensorflow-cpu")
    with pytest.raises(pkg_resources.DistributionNotFound):
        pkg_resources.get_distribution("no-such-distribution-lakeloop")


def test_address_without_a_driver_choice_comes_from_the_host(monkeypatch, outside_connects):
    monkeypatch.delenv("LAKELOOP_TFOS_HOST", raising=False)
    monkeypatch.setenv("SPARK_LOCAL_IP", "10.1.2.3")
    assert tfos_adapter.local_address() == "10.1.2.3"
    monkeypatch.delenv("SPARK_LOCAL_IP")
    assert tfos_adapter.local_address() == socket.gethostbyname(socket.gethostname())
    assert tfos_adapter.host_for_master("local-cluster[2,1,1024]") == "127.0.0.1"
    assert tfos_adapter.host_for_master("yarn") is None
    assert outside_connects == []


def test_functions_shipped_to_workers_are_patched_before_tfos_runs(spark):
    """A guarded function runs in a Python worker with the patches installed before it is unpickled."""

    def probe(_rows):
        import os
        import socket as sock
        import sys

        from tensorflowonspark import util

        original = sock.socket.connect

        def refuse_outside(self, address):
            if isinstance(address, tuple) and not address[0].startswith("127."):
                raise OSError(f"outside connect to {address}")
            return original(self, address)

        sock.socket.connect = refuse_outside
        try:
            address = util.get_ip_address()
        finally:
            sock.socket.connect = original
        yield {"address": address, "shim": "pkg_resources" in sys.modules, "cwd": os.getcwd()}

    from pyspark import SparkFiles

    rows = spark.sparkContext.parallelize([0], 1).mapPartitions(tfos_adapter._Guarded(probe, "127.0.0.1")).collect()
    assert rows[0]["address"] == "127.0.0.1"
    assert rows[0]["shim"]
    assert rows[0]["cwd"] == SparkFiles.getRootDirectory()  # TFoS's executor_id file stays out of the tree


def test_device_params_pin_the_scheduled_gpu_as_the_only_visible_one():
    assert BACKEND.device_params(gpu.task_device(["2"])) == {"CUDA_VISIBLE_DEVICES": "2", "tf_device": "/GPU:0"}
    assert BACKEND.device_params(gpu.task_device([])) == {"CUDA_VISIBLE_DEVICES": "", "tf_device": "/CPU:0"}
    assert gpu.tensorflow_env(["2"]) == {"CUDA_VISIBLE_DEVICES": "2"}


def test_local_mode_runs_one_worker(spark):
    assert num_executors(spark, 4) == 1


@pytest.mark.slow
def test_keras_model_imputes_missing_values_with_the_mean(tmp_path):
    import numpy as np
    from lakeloop.train.tfos import build_model, load_keras

    model = build_model([10.0, -1.0], [4.0, 16.0], [4], 0.01)
    normalised = model.layers[1](model.layers[0](np.array([[12.0, np.nan]], dtype=np.float32)))
    assert np.allclose(np.asarray(normalised), [[1.0, 0.0]])
    path = str(tmp_path / "m.keras")
    model.save(path)
    x = np.array([[12.0, np.nan], [1.0, 2.0]], dtype=np.float32)
    assert np.allclose(load_keras(path).predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.slow
def test_keras_heads_per_task(tmp_path):
    import numpy as np
    from lakeloop.train import heads
    from lakeloop.train.tfos import build_model, load_keras

    x = np.array([[12.0, np.nan], [1.0, 2.0]], dtype=np.float32)
    regression = build_model([10.0, -1.0], [4.0, 16.0], [4], 0.01, heads.head("regression"), (100.0, 5.0))
    unit = x
    for layer in regression.layers[:-1]:  # all but the Rescaling of the target
        unit = layer(unit)
    assert np.allclose(regression.predict(x, verbose=0), np.asarray(unit) * 5.0 + 100.0, atol=1e-4)
    path = str(tmp_path / "r.keras")
    regression.save(path)
    assert np.allclose(load_keras(path).predict(x, verbose=0), regression.predict(x, verbose=0))
    multiclass = build_model([10.0, -1.0], [4.0, 16.0], [4], 0.01, heads.head("multiclass", 3))
    probs = multiclass.predict(x, verbose=0)
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)


@pytest.fixture(scope="module")
def tfos_regression(spark, tmp_path_factory):
    return train_task_model(spark, tmp_path_factory.mktemp("tfos-regression"), "tfos", "regression",
                            "{epochs: 12, learning_rate: 0.01}")


@pytest.fixture(scope="module")
def tfos_multiclass(spark, tmp_path_factory):
    return train_task_model(spark, tmp_path_factory.mktemp("tfos-multiclass"), "tfos", "multiclass",
                            "{epochs: 12, learning_rate: 0.01}")


@pytest.mark.slow
def test_tfos_trains_a_regression_model_that_beats_the_baselines(tfos_regression):
    code, conf = tfos_regression
    assert code == 0
    check_task_model(conf, "regression", 12, "validation-rmse")


@pytest.mark.slow
def test_tfos_trains_a_multiclass_model_that_beats_the_baselines(tfos_multiclass):
    code, conf = tfos_multiclass
    assert code == 0
    check_task_model(conf, "multiclass", 12, "validation-accuracy")


@pytest.mark.slow
def test_train_job_trains_with_tensorflowonspark_and_registers_challenger(spark, conf, outside_connects):
    assert run_train_job(spark, conf, "tfos", "train.params={epochs: 2}") == 0
    check_registered_model(spark, conf, "tfos", 2,
                           ["training-loss", "training-auc", "validation-loss", "validation-auc"])
    assert outside_connects == []


@pytest.mark.slow
def test_a_failing_tensorflow_worker_raises_and_leaves_the_session_usable(spark):
    def broken_main(args, ctx):
        raise RuntimeError("model code failed")

    rows = spark.sparkContext.parallelize([(0.0, 1.0)] * 50, 1)
    with pytest.raises(tfos_adapter.TFoSError):
        tfos_adapter.train_cluster(spark.sparkContext, broken_main, {}, 1, rows, 1, feed_timeout=60)
    assert spark.range(3).count() == 3


def test_no_training_rows_is_an_error(spark):
    from lakeloop.train.base import TrainingData

    empty = spark.createDataFrame([], "a double, label int")
    data = TrainingData(train=empty, valid=empty, features=["a"])
    with pytest.raises(ValueError, match="no training rows"):
        BACKEND.fit(spark, data, {**BACKEND.default_params({"train.seed": 1, "train.num_workers": 1})})
