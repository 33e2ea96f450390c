"""`POST /api/publish` from Python: `Herald` (sync) and `AsyncHerald` (asyncio)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Tuple, Union

import httpx

#: A message for `publish_many`: `(group, data)` or `{"group": ..., "data": ...}`.
Message = Union[Tuple[str, Any], Mapping[str, Any]]


class HeraldError(Exception):
    """A request Herald refused (or could not be sent): `status` is the HTTP status (0 when no
    answer came), `code` Herald's error code (`forbidden`, `unavailable`, ...)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Result:
    """What happened to one message of `publish_many`."""

    ok: bool
    code: Optional[str] = None
    message: Optional[str] = None


def _batch(messages: Iterable[Message]) -> list[dict[str, Any]]:
    batch = []
    for message in messages:
        if isinstance(message, Mapping):
            batch.append({"group": message["group"], "data": message["data"]})
        else:
            group, data = message
            batch.append({"group": group, "data": data})
    return batch


def _error(response: httpx.Response) -> HeraldError:
    try:
        error = response.json()["error"]
        return HeraldError(response.status_code, error["code"], error["message"])
    except (ValueError, KeyError, TypeError):
        return HeraldError(response.status_code, "unknown", response.text[:200])


def _results(response: httpx.Response) -> list[Result]:
    try:
        answers = response.json()["results"]
    except (ValueError, KeyError, TypeError):
        raise _error(response) from None
    return [
        Result(True) if "ok" in a else Result(False, a["error"]["code"], a["error"]["message"]) for a in answers
    ]


def _headers(api_key: Optional[str]) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


class Herald:
    """Publishes through a Herald gateway's HTTP API, on one keep-alive connection pool.

    `url` is the gateway (or load balancer) base URL, `api_key` one of its `api_keys` (none:
    the gateway must be on loopback)."""

    def __init__(self, url: str, api_key: Optional[str] = None, timeout: float = 5.0) -> None:
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=_headers(api_key), timeout=timeout)

    def publish(self, group: str, data: Any) -> None:
        """Publishes `data` (any JSON) to `group`; raises `HeraldError` when refused."""
        response = self._send({"group": group, "data": data})
        if response.status_code != 200:
            raise _error(response)

    def publish_many(self, messages: Iterable[Message]) -> list[Result]:
        """Publishes a batch in one request, in order; one `Result` per message."""
        return _results(self._send(_batch(messages)))

    def _send(self, body: Any) -> httpx.Response:
        try:
            return self._http.post("/api/publish", json=body)
        except httpx.HTTPError as e:
            raise HeraldError(0, "unavailable", str(e)) from e

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Herald":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncHerald:
    """`Herald` for asyncio."""

    def __init__(self, url: str, api_key: Optional[str] = None, timeout: float = 5.0) -> None:
        self._http = httpx.AsyncClient(base_url=url.rstrip("/"), headers=_headers(api_key), timeout=timeout)

    async def publish(self, group: str, data: Any) -> None:
        response = await self._send({"group": group, "data": data})
        if response.status_code != 200:
            raise _error(response)

    async def publish_many(self, messages: Iterable[Message]) -> list[Result]:
        return _results(await self._send(_batch(messages)))

    async def _send(self, body: Any) -> httpx.Response:
        try:
            return await self._http.post("/api/publish", json=body)
        except httpx.HTTPError as e:
            raise HeraldError(0, "unavailable", str(e)) from e

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncHerald":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
