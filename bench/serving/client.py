"""One streaming request to an OpenAI-compatible server, timed chunk by chunk.

``send`` posts to ``/v1/completions`` (or ``/v1/chat/completions``) with ``"stream": true`` and
``"stream_options": {"include_usage": true}``, reads the server-sent events as they arrive and
returns a ``RequestRecord``: when the request was sent, when each chunk that carried text
arrived, when it ended, the token counts and how it ended. Times are ``time.perf_counter()``
seconds, the clock the load generator and the energy meter's windows share.

Token counts come from the server's ``usage`` when it gives them (``tokens_source = "usage"``:
the server's tokenizer counted them); else the output is counted as the number of chunks that
carried text (``"stream"``: one token per chunk, as most engines stream, but not all) and the
prompt's count is unknown.

A request ends in one of four ways, and none is hidden: ``ok``; ``rejected`` (an HTTP error
status, e.g. 400, 429 or 503, with the server's message); ``timeout`` (no end within
``Endpoint.timeout_s`` of sending); ``broken`` (connection refused or reset, an unparseable
chunk, an error reported mid-stream, or a stream that ended before the answer did). A stream
has ended properly at ``data: [DONE]``, or, for servers that never send it (``transformers
serve``), when the connection's body ends after a chunk with a ``finish_reason``.

The pure parts, ``SSEParser``, ``parse_chunk`` and ``read_stream``, take bytes and times, so
they are tested without a network. Standard library only: ``http.client``, one connection per
request (no pooling, so one request's failure cannot poison another's connection).
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from carbonbench.errors import InputError

logger = logging.getLogger(__name__)

Status = Literal["ok", "rejected", "timeout", "broken"]
STATUSES: tuple[Status, ...] = ("ok", "rejected", "timeout", "broken")
READ_SIZE = 65536
MESSAGE_CHARS = 300  # of a server's error message kept in a record
MODELS_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: the server's base URL (with or without ``/v1``) and the model name.

    ``extra_body`` is merged into each request's JSON (e.g. ``{"temperature": 0}``, or vLLM's
    ``{"ignore_eos": true}``); nothing outside the OpenAI API is sent unless given there.
    """

    url: str
    model: str
    chat: bool = False
    timeout_s: float = 300.0
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    api_key: str | None = None

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.chat else "/v1/completions"


@dataclass
class RequestRecord:
    """One request's timeline (``perf_counter`` seconds) and outcome."""

    id: int | str
    sent_at: float
    max_tokens: int = 0
    first_token_at: float | None = None
    finished_at: float = 0.0
    chunk_times: list[float] = field(default_factory=list)  # each chunk that carried text
    chunk_tokens: list[int] = field(default_factory=list)  # per chunk, when the server said
    prompt_tokens: int | None = None
    output_tokens: int = 0
    tokens_source: Literal["usage", "stream"] = "stream"
    status: Status = "ok"
    error: str = ""
    http_status: int | None = None

    @property
    def ttft_s(self) -> float | None:
        """Time to first token: sending to the first chunk with text (None if none came)."""
        return None if self.first_token_at is None else self.first_token_at - self.sent_at

    @property
    def e2e_s(self) -> float:
        return self.finished_at - self.sent_at

    @property
    def itl_s(self) -> list[float]:
        """Inter-token latencies as vLLM's benchmark takes them: the gaps between successive
        chunks that carried text, whatever the number of tokens in each. Chunks that arrived
        in one read share its time, so their gaps are 0."""
        times = self.chunk_times
        return [later - earlier for earlier, later in itertools.pairwise(times)]


@dataclass(frozen=True)
class Chunk:
    """What one streamed event says: its text, cumulative usage, whether it ends the answer,
    and an error the server reported in the stream."""

    text: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finished: bool = False
    error: str | None = None
    done: bool = False  # data: [DONE]


class StreamBroken(Exception):
    """A stream that cannot be read as an OpenAI-compatible one (the message says why)."""


class SSEParser:
    """Server-sent events from a byte stream, fed in reads of any size.

    Lines end in LF or CRLF; ``data:`` lines accumulate (joined by newlines) until a blank
    line dispatches the event; lines starting with ``:`` are comments; other fields (``event``,
    ``id``, ``retry``) are ignored, since OpenAI-compatible streams carry everything in
    ``data``. Bytes are split into lines before decoding, so a UTF-8 character split across
    reads is whole again.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, data: bytes) -> list[str]:
        """The events completed by these bytes (their ``data``)."""
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        return self._read_lines(lines)

    def finish(self) -> list[str]:
        """At the end of the stream: an unterminated last line and event are dispatched too,
        so that a stream cut mid-event shows up as that event's bad JSON."""
        rest, self._buffer = self._buffer, b""
        events = self._read_lines([rest] if rest else [])
        if self._data:
            events.append("\n".join(self._data))
            self._data = []
        return events

    def _read_lines(self, lines: Iterable[bytes]) -> list[str]:
        events: list[str] = []
        for raw in lines:
            line = raw.removesuffix(b"\r").decode("utf-8", errors="replace")
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                if name == "data":
                    self._data.append(value.removeprefix(" "))
        return events


def parse_chunk(data: str, chat: bool) -> Chunk:
    """One event's ``data``: ``[DONE]``, or a completions chunk (``choices[0].text``) or a chat
    chunk (``choices[0].delta.content``, and ``reasoning_content`` or ``reasoning``: tokens a
    reasoning model streams apart, generated all the same). ``usage`` may come in a chunk
    whose ``choices`` is empty. Raises ``StreamBroken`` for anything else."""
    if data.strip() == "[DONE]":
        return Chunk(done=True)
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        raise StreamBroken(f"unparseable chunk (cut mid-JSON?): {data[:80]!r}") from None
    if not isinstance(chunk, dict):
        raise StreamBroken(f"a chunk that is not a JSON object: {data[:80]!r}")
    if chunk.get("error") is not None:
        return Chunk(error=_message(chunk))
    text = ""
    finished = False
    choices = chunk.get("choices") or []
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
        finished = choice.get("finish_reason") is not None
        if chat:
            delta = choice.get("delta") or {}
            if isinstance(delta, dict):
                parts = (delta.get(key) for key in ("reasoning_content", "reasoning", "content"))
                text = "".join(part for part in parts if isinstance(part, str))
        elif isinstance(choice.get("text"), str):
            text = choice["text"]
    usage = chunk.get("usage")
    if not isinstance(usage, dict):
        return Chunk(text=text, finished=finished)
    return Chunk(
        text=text,
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        finished=finished,
    )


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_stream(record: RequestRecord, reads: Iterable[tuple[float, bytes]], chat: bool) -> None:
    """Fill ``record`` from a stream's reads, each ``(arrival time, bytes)``: chunk times,
    tokens and status (``ok`` or ``broken``). Errors of the reads themselves (a reset, a
    timeout) propagate: the caller classifies them.

    Tokens per chunk are known when every chunk with text also carried cumulative usage (vLLM's
    ``continuous_usage_stats``): then ``chunk_tokens`` holds the differences."""
    parser = SSEParser()
    cumulative: list[int | None] = []  # each text chunk's usage, when it carried one
    try:
        _read_events(record, parser, _with_end(reads), chat, cumulative)
    except StreamBroken as error:
        _fail(record, "broken", str(error))
    finally:  # also when a read failed: what arrived before is kept
        record.first_token_at = record.chunk_times[0] if record.chunk_times else None
        if record.tokens_source == "stream":
            record.output_tokens = len(record.chunk_times)
        elif cumulative and all(count is not None for count in cumulative):
            counts = [0, *(count or 0 for count in cumulative)]
            record.chunk_tokens = [b - a for a, b in itertools.pairwise(counts)]


def _read_events(
    record: RequestRecord,
    parser: SSEParser,
    reads: Iterable[tuple[float, bytes]],
    chat: bool,
    cumulative: list[int | None],
) -> None:
    finished = False
    for arrived, data in reads:
        for event in parser.feed(data) if data else parser.finish():
            chunk = parse_chunk(event, chat)
            if chunk.done:
                return
            if chunk.error is not None:
                raise StreamBroken(f"the server reported an error mid-stream: {chunk.error}")
            if chunk.text:
                record.chunk_times.append(arrived)
                cumulative.append(chunk.completion_tokens)
            if chunk.completion_tokens is not None:
                record.output_tokens = chunk.completion_tokens
                record.prompt_tokens = chunk.prompt_tokens
                record.tokens_source = "usage"
            finished = finished or chunk.finished
    if not finished:
        raise StreamBroken(
            "the stream ended before the answer did (no finish_reason, no data: [DONE])"
        )


def _with_end(reads: Iterable[tuple[float, bytes]]) -> Iterator[tuple[float, bytes]]:
    """The reads, then ``(time, b"")`` marking the end of the stream."""
    arrived = 0.0
    for arrived, data in reads:
        if data:
            yield arrived, data
    yield arrived, b""


def _fail(record: RequestRecord, status: Status, error: str) -> None:
    record.status = status
    record.error = error


def server_message(body: bytes) -> str:
    """An error response's message, on one line: OpenAI's ``{"error": {"message": ...}}``,
    FastAPI's ``{"detail": ...}``, ``{"error": "..."}``, ``{"message": ...}``, else the text."""
    text = body.decode("utf-8", errors="replace")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        payload = None
    message = _message(payload) if isinstance(payload, dict) else text
    message = " ".join(message.split())
    return message[:MESSAGE_CHARS] or "(no message)"


def _message(payload: dict[str, Any]) -> str:
    for key in ("error", "detail", "message"):
        value = payload.get(key)
        if isinstance(value, dict):
            return str(value.get("message") or value)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return "; ".join(str(item.get("msg", item)) for item in value)
        if value:
            return str(value)
    return json.dumps(payload)[:MESSAGE_CHARS]


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int | None
    base: str  # the path before /v1, without a trailing slash

    def connection(self, timeout_s: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            context = ssl.create_default_context()
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout_s, context=context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)


def _target(url: str) -> _Target:
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise InputError(f"bad server URL {url!r}: give http://HOST:PORT (with or without /v1)")
    base = parts.path.rstrip("/").removesuffix("/v1").rstrip("/")
    return _Target(parts.scheme, parts.hostname, port, base)


class InFlight:
    """The connections of the requests in flight, so that an aborted level cuts them at once
    rather than waiting for their timeouts; after ``cut``, new requests are refused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self.reason: str | None = None

    def add(self, sock: socket.socket) -> bool:
        """Track a connected socket; False (and not tracked) once cut."""
        with self._lock:
            if self.reason is not None:
                return False
            self._sockets.add(sock)
            return True

    def discard(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def cut(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked reading it


def request_body(endpoint: Endpoint, prompt: str, max_tokens: int) -> dict[str, Any]:
    """The JSON of one request: the prompt (as one user message for chat), ``max_tokens``,
    streaming with usage, then ``extra_body`` (its ``stream_options`` merged into ours)."""
    body: dict[str, Any] = {"model": endpoint.model}
    if endpoint.chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    body["max_tokens"] = max_tokens
    body["stream"] = True
    extra = dict(endpoint.extra_body)
    options = {"include_usage": True, **dict(extra.pop("stream_options", None) or {})}
    body["stream_options"] = options
    body.update(extra)
    return body


def _headers(endpoint: Endpoint) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    return headers


def send(
    endpoint: Endpoint,
    prompt: str,
    max_tokens: int,
    request_id: int | str,
    in_flight: InFlight | None = None,
) -> RequestRecord:
    """Send one streaming request and time it; never raises for what the server or the
    network does (that goes in the record's status), only for a bad URL."""
    target = _target(endpoint.url)
    body = json.dumps(request_body(endpoint, prompt, max_tokens)).encode()
    record = RequestRecord(id=request_id, sent_at=time.perf_counter(), max_tokens=max_tokens)
    deadline = record.sent_at + endpoint.timeout_s
    conn = target.connection(endpoint.timeout_s)
    sock: socket.socket | None = None
    try:
        conn.connect()
        sock = conn.sock
        if in_flight is not None and not in_flight.add(sock):
            _fail(record, "broken", f"not sent: {in_flight.reason}")
        else:
            conn.request("POST", target.base + endpoint.path, body=body, headers=_headers(endpoint))
            _settimeout(sock, deadline)
            response = conn.getresponse()
            record.http_status = response.status
            if response.status != 200:
                _settimeout(sock, deadline)
                message = server_message(response.read(READ_SIZE))
                _fail(record, "rejected", f"HTTP {response.status}: {message}")
            else:
                read_stream(record, _reads(response, sock, deadline), endpoint.chat)
                kind = response.getheader("Content-Type", "")
                if record.status == "broken" and "text/event-stream" not in kind:
                    record.error += f" (the server answered Content-Type {kind!r}, not a stream)"
    except TimeoutError:
        _fail(record, "timeout", f"no end within {endpoint.timeout_s:g} s of sending")
    except ConnectionRefusedError:
        _fail(record, "broken", "connection refused")
    except (OSError, http.client.HTTPException) as error:
        _fail(record, "broken", _describe(error))
    finally:
        record.finished_at = time.perf_counter()
        if sock is not None and in_flight is not None:
            in_flight.discard(sock)
        conn.close()
    if in_flight is not None and in_flight.reason and record.status != "ok":
        record.error = f"cut: {in_flight.reason} ({record.error})"
    if record.status != "ok":
        logger.debug("request %s %s: %s", request_id, record.status, record.error)
    return record


def _settimeout(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.perf_counter()
    if remaining <= 0:
        raise TimeoutError
    sock.settimeout(remaining)


def _reads(
    response: http.client.HTTPResponse, sock: socket.socket, deadline: float
) -> Iterator[tuple[float, bytes]]:
    """The body's bytes as they arrive, each read bounded by what is left of the deadline."""
    while True:
        _settimeout(sock, deadline)
        data = response.read1(READ_SIZE)
        if not data:
            return
        yield time.perf_counter(), data


def _describe(error: BaseException) -> str:
    if isinstance(error, http.client.IncompleteRead):
        return "the connection closed mid-stream"
    if isinstance(error, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    name = type(error).__name__
    text = str(error)
    return f"{name}: {text}" if text else name


def _get_json(url: str, path: str, timeout_s: float) -> Any:
    """GET ``path`` at the server; one-line InputErrors for a server that does not answer."""
    target = _target(url)
    conn = target.connection(timeout_s)
    try:
        conn.request("GET", target.base + path, headers={"Accept": "application/json"})
        response = conn.getresponse()
        body = response.read()
    except ConnectionRefusedError:
        raise InputError(
            f"nothing answers at {url} (connection refused): start the server, or give --server CMD"
        ) from None
    except TimeoutError:
        raise InputError(
            f"nothing answers at {url} (no answer within {timeout_s:g} s): is the server "
            "up and reachable?"
        ) from None
    except (OSError, http.client.HTTPException) as error:
        raise InputError(
            f"nothing answers at {url} ({_describe(error)}): start the server, or give --server CMD"
        ) from None
    finally:
        conn.close()
    if response.status != 200:
        raise InputError(
            f"{url} answered GET {path} with HTTP {response.status}: {server_message(body)} "
            "(is it an OpenAI-compatible server?)"
        )
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise InputError(
            f"{url} answered GET {path} with something not JSON: is it an OpenAI-compatible server?"
        ) from None


def list_models(url: str, timeout_s: float = MODELS_TIMEOUT_S) -> list[str]:
    """The model names the server lists at ``GET /v1/models`` (``data[].id``)."""
    payload = _get_json(url, "/v1/models", timeout_s)
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise InputError(
            f"{url} answered GET /v1/models without a data list: is it an OpenAI-compatible server?"
        )
    return [str(item["id"]) for item in data if isinstance(item, dict) and "id" in item]


def check(endpoint: Endpoint) -> None:
    """Refuse, in one line, a server that does not answer or does not list the model. A server
    that lists no model at all (one that loads models on demand) passes: the warm-up's first
    request will say whether it serves this one."""
    models = list_models(endpoint.url, min(endpoint.timeout_s, MODELS_TIMEOUT_S))
    if not models:
        logger.warning("%s lists no models; trying %s anyway", endpoint.url, endpoint.model)
    elif endpoint.model not in models:
        listed = ", ".join(models[:20]) + (
            f" (and {len(models) - 20} more)" if len(models) > 20 else ""
        )
        raise InputError(
            f"the server at {endpoint.url} does not list model {endpoint.model!r}; "
            f"it lists: {listed} (give one of them with --model)"
        )
