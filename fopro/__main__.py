"""``python -m fopro serve|worker|up|migrate|admin`` (see ``fopro.cli``)."""

from fopro.cli import main

main()
