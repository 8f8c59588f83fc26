"""``python -m longread_sandbox``."""

from longread_sandbox.cli import main

raise SystemExit(main())
