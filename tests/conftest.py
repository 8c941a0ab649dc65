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
