"""``python -m foprokd train|evaluate|export`` (see ``foprokd.cli``)."""

from foprokd.cli import main

raise SystemExit(main())
