import os
import shutil
import tempfile

import pytest

from tests.http_server import LoopbackServer

_NATIVE_CACHE = None


def pytest_configure(config):
    """The native GroupNorm kernel (bit_keras.models.native) is built once per test session, into a folder every
    test and every worker process shares (tests point BIT_KERAS_HOME at temporary folders), and it must build:
    BIT_KERAS_NATIVE_OPS=1 makes a failed build an error instead of a silent fall-back to Keras ops."""
    global _NATIVE_CACHE
    if "BIT_KERAS_NATIVE_CACHE" not in os.environ:
        _NATIVE_CACHE = tempfile.mkdtemp(prefix="bit-keras-native-")
        os.environ["BIT_KERAS_NATIVE_CACHE"] = _NATIVE_CACHE
    os.environ.setdefault("BIT_KERAS_NATIVE_OPS", "1")


def pytest_unconfigure(config):
    if _NATIVE_CACHE is not None:
        shutil.rmtree(_NATIVE_CACHE, ignore_errors=True)


@pytest.fixture
def loopback_server():
    """A running LoopbackServer (empty; add files via ``server.files[path] = data``)."""
    with LoopbackServer() as server:
        yield server


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need a GPU: they are skipped (and say so) on CPU-only machines."""
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    skip = pytest.mark.skip(reason="needs a GPU; none is visible to TensorFlow")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
