"""`python -m ingest` is the `ingest` command."""

from ingest.cli.main import main

raise SystemExit(main())
