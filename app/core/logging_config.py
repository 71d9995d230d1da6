"""How the API process logs: one line per record on stderr, each naming the request it served.

``fopro serve`` hands ``api_log_config()`` to uvicorn, which applies it before it loads the app,
so uvicorn's access and error lines and the service's own loggers share the format.
"""

from __future__ import annotations

from typing import Any

API_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s request_id=%(request_id)s %(message)s"


def api_log_config() -> dict[str, Any]:
    """A ``logging.config.dictConfig`` mapping: every record at INFO or above, from uvicorn or
    any other logger, goes to stderr in ``API_LOG_FORMAT``."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        # A string, resolved when applied: importing this module needs no API package.
        "filters": {"request_id": {"()": "app.core.request_id.RequestIdFilter"}},
        "formatters": {"request": {"format": API_LOG_FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "request",
                "filters": ["request_id"],
            }
        },
        # uvicorn's loggers, left unconfigured, propagate here instead of to handlers of their own.
        "root": {"handlers": ["stderr"], "level": "INFO"},
    }
