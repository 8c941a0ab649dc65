"""carbonbench inside users' work: ``track()`` and ``measure``, the pytest fixture."""
