"""The ``fopro`` command: the composition root above ``app`` and ``workers``.

It wires the HTTP service, the Celery workers and the admin commands into one CLI, so that nothing
below it ever imports a command line (``python -m fopro`` or the ``fopro`` script).
"""
