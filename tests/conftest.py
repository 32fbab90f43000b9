import pytest

from tests.http_server import LoopbackServer


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
