"""``python -m unetrpp`` runs the CLI (the Slicer module starts its child process this way)."""

from unetrpp.cli import main

raise SystemExit(main())
