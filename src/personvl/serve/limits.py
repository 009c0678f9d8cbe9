"""The service's resource limits and the ASGI guards that enforce the request-level ones."""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from personvl.errors import UsageError

TOKEN_COOKIE = "personvl_token"


@dataclass(frozen=True)
class ServiceLimits:
    """Bounds on what one request, and all requests together, may cost.

    ``max_in_flight`` requests may wait for or use the model at once; more are answered 503
    at once rather than queued without end, so memory stays bounded under load.
    """

    max_upload_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 25_000_000
    max_query_chars: int = 500
    max_k: int = 100
    max_in_flight: int = 32
    max_batch: int = 16
    decode_threads: int = 2
    thumbnail_pixels: int = 256  # longest side of a thumbnail
    thumbnail_cache: int = 512  # thumbnails kept in memory
    max_json_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 1:
                raise UsageError(f"{name} must be at least 1, got {value}")


def _json_error_events(status: int, message: str, extra_headers: list | None = None):
    body = json.dumps({"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    start = {"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])}
    return start, {"type": "http.response.body", "body": body}


class BodySizeLimit:
    """Refuses request bodies over a limit with 413, before they are parsed or spooled.

    ``Content-Length`` is checked first; a body sent without one (chunked) is counted as it
    arrives: at the limit the 413 goes out and the application is told the client left, so
    it stops reading and whatever it answers is dropped.
    """

    def __init__(self, app, limit_for_path) -> None:
        self.app = app
        self.limit_for_path = limit_for_path  # path -> bytes allowed

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for_path(scope["path"])
        message = f"request body is larger than the limit of {limit:,} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            for event in _json_error_events(413, message):
                await send(event)
            return
        received = 0
        started = refused = False

        async def counting_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > limit:
                    if not started:
                        for error_event in _json_error_events(413, message):
                            await send(error_event)
                    refused = True
                    return {"type": "http.disconnect"}
            return event

        async def guarded_send(event):
            nonlocal started
            if refused:
                return
            started = started or event["type"] == "http.response.start"
            await send(event)

        await self.app(scope, counting_receive, guarded_send)


class TokenAuth:
    """Requires the API token on every request when one is set.

    Accepted as ``Authorization: Bearer <token>``, ``X-API-Token: <token>``, or the cookie the
    page receives after opening ``/?token=<token>`` once (HttpOnly, SameSite=Strict: scripts
    cannot read it and other sites cannot send it).
    """

    def __init__(self, app, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _matches(self, candidate: str | bytes | None) -> bool:
        if candidate is None:
            return False
        if isinstance(candidate, str):
            candidate = candidate.encode()
        return hmac.compare_digest(candidate, self.token)

    def _presented(self, scope) -> list:
        headers = dict(scope["headers"])
        candidates = [headers.get(b"x-api-token")]
        authorization = headers.get(b"authorization", b"")
        if authorization[:7].lower() == b"bearer ":
            candidates.append(authorization[7:].strip())
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
        except Exception:  # a malformed cookie header only means no token was sent that way
            pass
        if TOKEN_COOKIE in cookie:
            candidates.append(cookie[TOKEN_COOKIE].value)
        return candidates

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):  # lifespan events carry no request
            await self.app(scope, receive, send)
            return
        if any(self._matches(candidate) for candidate in self._presented(scope)):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation
            return
        if scope["path"] == "/" and scope["method"] == "GET":
            offered = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
            if self._matches(offered):
                # Move the token from the address bar (and history) into a cookie.
                cookie = f"{TOKEN_COOKIE}={offered}; HttpOnly; SameSite=Strict; Path=/"
                await send({"type": "http.response.start", "status": 303,
                            "headers": [(b"location", b"/"), (b"set-cookie", cookie.encode("latin-1")),
                                        (b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
                return
        message = ("an API token is required: send 'Authorization: Bearer <token>' "
                   "(in a browser, open /?token=<token> once)")
        for event in _json_error_events(401, message, [(b"www-authenticate", b"Bearer")]):
            await send(event)
