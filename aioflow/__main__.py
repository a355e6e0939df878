"""``python -m aioflow``: the ``aioflow`` command (see `aioflow.cli`)."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
