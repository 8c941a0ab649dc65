import pytest

from carbonbench.models.registry import ARCHITECTURES

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _registry():
    """Each test leaves the architecture registry as it found it: reading a stored suite that
    names ``package.module:RECORD`` registers that record, and no test may see another's."""
    saved = dict(ARCHITECTURES)
    yield
    ARCHITECTURES.clear()
    ARCHITECTURES.update(saved)


# A real serving engine (tests/serving.py): skipped, saying why, without the serving extra.
@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """The tiny random-weights Llama's folder, written once per session."""
    from tests.serving import require_serving

    require_serving()
    from carbonbench.serving.tiny import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_server(tiny_llama, tmp_path_factory):
    """One `transformers serve` for the session, warmed by a request; no test may stop it."""
    from tests.serving import start_tiny_server, warm_up

    server = start_tiny_server(tiny_llama, tmp_path_factory.mktemp("serve") / "server.log")
    try:
        warm_up(server)
        yield server
    finally:
        server.process.stop()


@pytest.fixture
def fresh_tiny_server(tiny_llama, tmp_path):
    """A cold `transformers serve` of the test's own, which it may kill; stopped after it."""
    from tests.serving import start_tiny_server

    server = start_tiny_server(tiny_llama, tmp_path / "server.log")
    try:
        yield server
    finally:
        server.process.stop()
