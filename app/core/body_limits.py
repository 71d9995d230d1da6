"""Request bodies with bounds: JSON bodies up to ``FOPRO_MAX_JSON_BODY_BYTES`` (413 beyond), and
no body may stall for longer than ``FOPRO_BODY_IDLE_TIMEOUT_S`` between two chunks.

A pure ASGI wrapper, so uploads still stream. A JSON body is read here whole (it is at most the
limit, and the route would read it whole anyway) and replayed to the app; a streamed body (an
upload) passes chunk by chunk, and one that stalls ends as a client disconnect, which the upload
code already answers by storing nothing.
"""

from __future__ import annotations

import json

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.config import get_settings

_JSON_TYPES = (b"application/json", b"application/merge-patch+json")


def _error(status: int, code: str, message: str) -> tuple[dict[str, object], bytes]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, body


class BodyLimits:
    """See the module docstring; the limits are read from settings on each request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = get_settings()
        limit, idle_s = settings.max_json_body_bytes, settings.body_idle_timeout_s
        headers = dict(scope.get("headers", []))
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type in _JSON_TYPES:
            declared = headers.get(b"content-length")
            await self._json(scope, receive, send, declared, limit=limit, idle_s=idle_s)
            return

        body_done = False

        async def idle_limited() -> Message:
            nonlocal body_done
            if body_done:
                # After the body, receive() waits for the client to leave (streamed responses
                # listen for it): no timeout there, or a long event stream would be cut.
                return await receive()
            with anyio.move_on_after(idle_s):
                message = await receive()
                body_done = message["type"] != "http.request" or not message.get("more_body")
                return message
            return {"type": "http.disconnect"}

        await self.app(scope, idle_limited, send)

    async def _json(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        declared: bytes | None,
        *,
        limit: int,
        idle_s: float,
    ) -> None:
        too_large = (
            413,
            "payload_too_large",
            f"JSON bodies are limited to {limit} bytes (FOPRO_MAX_JSON_BODY_BYTES).",
        )
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send, *too_large)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            with anyio.move_on_after(idle_s) as idle:
                message = await receive()
            if idle.cancelled_caught:
                await self._refuse(
                    send,
                    408,
                    "request_timeout",
                    f"The request body sent nothing for {idle_s:g} s; send it again.",
                )
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(send, *too_large)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: waits for the disconnect, as ASGI says

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Send, status: int, code: str, message: str) -> None:
        start, body = _error(status, code, message)
        await send(start)
        await send({"type": "http.response.body", "body": body})
