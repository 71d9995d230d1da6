"""The route class every router of the service uses: a sync route gives its database
connection back before its thread does.

FastAPI runs a sync route in the threadpool and then validates its answer in a second trip
there. A route that only read kept its transaction, and so its pooled connection, open across
that gap. Under a burst, every threadpool thread could be waiting in the pool for a connection
while the requests holding all of them waited for a thread to finish on: the process stood
still until the pool's 30 s timeout (``bench.api_load``;
``tests/integration/service/test_connection_pool.py``). Ending a read-only transaction where
the route ran closes that gap; a transaction that wrote is left to its owner, as before.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from app.core.db import end_read_transaction


def _is_sync(endpoint: Callable[..., Any]) -> bool:
    function = inspect.unwrap(endpoint)
    return not (
        inspect.iscoroutinefunction(function)
        or inspect.isasyncgenfunction(function)
        or inspect.isgeneratorfunction(function)
    )


def releasing_connections(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint``, ending each read-only transaction of the sessions it was given once it
    returns, in the thread it ran in."""

    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> Any:
        result = endpoint(*args, **kwargs)
        for value in kwargs.values():
            if isinstance(value, Session):
                end_read_transaction(value)
        return result

    return run


class ServiceRoute(APIRoute):
    """An APIRoute whose sync endpoint hands its connection back before its answer is
    validated (``releasing_connections``)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if _is_sync(endpoint):
            endpoint = releasing_connections(endpoint)
        super().__init__(path, endpoint, **kwargs)
