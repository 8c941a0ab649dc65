"""A real serving engine for the serving tests: ``transformers serve`` on 127.0.0.1 with the
tiny random-weights Llama of ``carbonbench.serving.tiny``, on a free port, through
``ServerProcess``. Nothing is downloaded (``HF_HUB_OFFLINE=1``).

The fixtures of ``tests/conftest.py`` build on these: ``tiny_llama`` (the model's folder),
``tiny_server`` (one warmed server for the session) and ``fresh_tiny_server`` (a cold one a
test may kill). Each skips, saying why, when the serving extra is not installed.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from carbonbench.serving.server import ServerProcess

SKIP = "the serving extra is not installed: pip install -e '.[serving]'"
READY_TIMEOUT_S = 120.0  # about 6 s here; CI's 2 cores may be slower under a parallel load


@dataclass(frozen=True)
class TinyServer:
    """A running ``transformers serve``: requests go to ``url`` and name ``model``."""

    url: str  # the server's root, http://127.0.0.1:PORT (the API under /v1)
    model: str  # the name requests give as "model": the folder, as the command named it
    process: ServerProcess


def require_serving() -> None:
    """Skip the calling test unless ``transformers serve`` can run here."""
    for module in ("fastapi", "uvicorn", "openai", "transformers", "tokenizers"):
        pytest.importorskip(module, reason=SKIP)


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_command(model: Path, port: int) -> list[str]:
    """``transformers serve`` pinned to ``model``, continuous batching, CPU, loopback only.

    The cache is sized here: left to itself, continuous batching on a CPU takes 60% of the
    machine's RAM for it (about 14 GB of 24, zeroed on the first request, which then takes
    seconds), and a second server on the machine is killed for memory. 64 blocks of 256
    tokens and batches of at most 512 tokens keep the server near 0.5 GB.
    """
    return [
        sys.executable, "-m", "transformers.cli.transformers", "serve", str(model),
        "--continuous-batching", "--cb-num-blocks", "64", "--cb-max-batch-tokens", "512",
        "--device", "cpu", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


def start_tiny_server(model: Path, log_path: Path) -> TinyServer:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = ServerProcess(
        serve_command(model, port),
        f"http://127.0.0.1:{port}",
        log_path,
        timeout_s=READY_TIMEOUT_S,
        env=env,
    )
    process.start()
    return TinyServer(url=process.url, model=str(model), process=process)


def stream_chat(server: TinyServer, content: str, max_tokens: int) -> list[dict]:
    """One streamed ``/v1/chat/completions`` request: its chunks, parsed (no ``[DONE]``)."""
    port = int(server.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = {
        "model": server.model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    try:
        connection.request(
            "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        assert response.status == 200, response.read()
        chunks = []
        for line in response:
            data = line.decode().strip().removeprefix("data: ")
            if data and data != "[DONE]":
                chunks.append(json.loads(data))
        return chunks
    finally:
        connection.close()


def warm_up(server: TinyServer) -> None:
    """One request: continuous batching starts its scheduler and allocates its cache on the
    first, which no test of a warmed server should time."""
    stream_chat(server, "warm up", max_tokens=1)
