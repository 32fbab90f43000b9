import pytest

from tests.http_server import LoopbackServer


@pytest.fixture
def loopback_server():
    """A running LoopbackServer (empty; add files via ``server.files[path] = data``)."""
    with LoopbackServer() as server:
        yield server
