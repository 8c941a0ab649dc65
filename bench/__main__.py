"""``python -m carbonbench`` is ``carbonbench``."""

from carbonbench.cli import main

raise SystemExit(main())
