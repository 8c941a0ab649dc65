"""The import package as users see it: one name, ``carbonbench``, with its public API, and
the command it installs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import carbonbench
from carbonbench import models


def test_public_api_names_resolve() -> None:
    for name in carbonbench.__all__:
        assert getattr(carbonbench, name) is not None, name
    assert carbonbench.load_suite("smoke").name == "smoke"
    assert carbonbench.analysis.estimate.from_hardware  # the module, for its several entry points
    assert issubclass(carbonbench.InputError, ValueError)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        carbonbench.nope  # noqa: B018


def test_import_carbonbench_does_not_load_torch() -> None:
    code = "import sys, carbonbench, carbonbench.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_no_generic_top_level_names_are_importable_from_the_package() -> None:
    assert carbonbench.__name__ == "carbonbench"
    assert models.__name__ == "carbonbench.models"
    assert carbonbench.models.registry.__name__ == "carbonbench.models.registry"


@pytest.mark.parametrize("name", list(models.ARCHITECTURES))
def test_build_sets_arch_config_and_impl(name) -> None:
    record = models.architecture(name)
    for impl in record.impls:
        model = models.build(name, "tiny", impl, dropout=0.0)
        assert (model.arch, model.impl) == (name, impl)
        assert model.config == models.make_config(name, "tiny")
