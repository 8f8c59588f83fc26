"""``python -m longread_server.sandbox``."""

from longread_server.sandbox.cli import main

raise SystemExit(main())
