"""``python -m bench`` is ``carbonbench``."""

from bench.cli import main

raise SystemExit(main())
