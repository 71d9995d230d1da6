"""``python -m foprokd train|evaluate|export|sample`` (see ``foprokd.cli``)."""

from foprokd.cli import main

raise SystemExit(main())
