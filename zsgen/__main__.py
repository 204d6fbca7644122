"""``python -m zsgen``: the same command as the ``zsgen`` console script."""

from zsgen.cli import main

raise SystemExit(main())
