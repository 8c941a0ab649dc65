"""The server that ``carbonbench serving --server "CMD"`` starts: its own process group, its
output in a log file the run keeps, ready once it answers over HTTP, and stopped for certain.

Ready means ``GET {url}/health`` answers 200 or, for a server without that route (a 404),
``GET {url}/v1/models`` does. ``url`` is the server's root (``http://127.0.0.1:8000``); a
trailing ``/v1``, as OpenAI clients write base URLs, is dropped. Polling uses ``http.client``
directly, not urllib, so that a proxy set in the environment never sees a loopback request.

A command that cannot start, exits, or does not answer in time is bad input: one line saying
which, with its exit status, its last log lines and the log's path.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from carbonbench.errors import InputError

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 180.0  # a large model loads for minutes
POLL_S = 0.25
PROBE_TIMEOUT_S = 2.0  # one health request; a busy server may be slow to accept
GRACE_S = 10.0  # from SIGTERM to SIGKILL
TAIL_BYTES = 65536  # what last_lines reads from the end of the log


def describe_status(status: int) -> str:
    """``status 3``, or ``signal 9 (SIGKILL)`` for a process a signal ended (Popen's -9)."""
    if status >= 0:
        return f"status {status}"
    try:
        name = signal.Signals(-status).name
    except ValueError:
        return f"signal {-status}"
    return f"signal {-status} ({name})"


class ServerProcess:
    """One server command, started in its own process group and stopped with all its children.

    ``start()`` (or ``with``) returns once the server answers; ``ready_s`` is how long that took.
    """

    def __init__(
        self,
        command: str | Sequence[str],
        url: str,
        log_path: str | Path,
        *,
        timeout_s: float = READY_TIMEOUT_S,
        grace_s: float = GRACE_S,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(command, str):
            try:
                argv = shlex.split(command)
            except ValueError as error:
                raise InputError(f"server command {command!r} cannot be split: {error}") from None
        else:
            argv = list(command)
        if not argv:
            raise InputError("server command is empty: give the command that starts the server")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(
                f"server url {url!r} is not http(s)://HOST:PORT: give the server's root"
            )
        if timeout_s <= 0:
            raise InputError(f"server timeout {timeout_s:g} s must be positive")
        self.argv = argv
        path = parts.path.rstrip("/")
        self.url = f"{parts.scheme}://{parts.netloc}{path.removesuffix('/v1')}"
        self.log_path = Path(log_path)
        self.timeout_s = timeout_s
        self.grace_s = grace_s
        self.env = dict(env) if env is not None else None
        self.ready_s: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._health_path = "/health"

    @property
    def command(self) -> str:
        return shlex.join(self.argv)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def exit_status(self) -> int | None:
        """The exit status once the process has ended (negative: the signal that ended it)."""
        return self._leader_status()

    def alive(self) -> bool:
        return self._process is not None and self._leader_status() is None

    def ended_within(self, seconds: float) -> bool:
        """Whether the command has ended, or ends within ``seconds``. A dying process closes
        its sockets before its exit status can be read, so its clients' requests fail a moment
        before ``alive()`` says so."""
        deadline = time.monotonic() + seconds
        while self._leader_status() is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def start(self) -> ServerProcess:
        """Start the command and wait until it answers; stopped again if it never does."""
        if self._process is not None:
            raise RuntimeError("a ServerProcess starts once")
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")  # a Python server's last lines reach the log
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            try:
                self._process = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # its own group: stop() reaches its children
                )
            except OSError as error:
                raise InputError(
                    f"server command {self.command!r} cannot start: {error.strerror}"
                ) from None
        logger.info("server started (pid %d): %s", self._process.pid, self.command)
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.monotonic() - started
        logger.info("server answers at %s after %.1f s", self.url, self.ready_s)
        return self

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.timeout_s
        while True:
            status = self.exit_status
            if status is not None:
                raise InputError(
                    f"server command {self.command!r} exited with {describe_status(status)}"
                    f" before it answered at {self.url}: {self._tail_line()}"
                )
            if self._answers(min(PROBE_TIMEOUT_S, max(deadline - time.monotonic(), 0.1))):
                return
            if time.monotonic() >= deadline:
                raise InputError(
                    f"server command {self.command!r} did not answer at"
                    f" {self.url}{self._health_path} in {self.timeout_s:g} s (check that it"
                    f" listens there, or give it more time): {self._tail_line()}"
                )
            time.sleep(POLL_S)

    def _answers(self, timeout_s: float) -> bool:
        """Whether the health route answers 200; a 404 there moves polling to /v1/models."""
        status = self._get(self._health_path, timeout_s)
        if status == 404 and self._health_path == "/health":
            logger.debug("%s has no /health: polling /v1/models", self.url)
            self._health_path = "/v1/models"
            status = self._get(self._health_path, timeout_s)
        return status == 200

    def _get(self, path: str, timeout_s: float) -> int | None:
        """The status of ``GET path``, or None when nothing answers (not listening yet)."""
        parts = urlsplit(self.url)
        https = parts.scheme == "https"
        kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
        connection = kind(parts.hostname or "", parts.port, timeout=timeout_s)
        try:
            connection.request("GET", f"{parts.path}{path}")
            response = connection.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            connection.close()

    def last_lines(self, n: int = 10) -> list[str]:
        """The log's last ``n`` non-blank lines; of a progress bar (``\\r``), its last state."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(log.tell() - TAIL_BYTES, 0))
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return []
        lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.splitlines()]
        return [line for line in lines if line.strip()][-n:] if n > 0 else []

    def _tail_line(self, n: int = 5) -> str:
        lines = self.last_lines(n)
        said = " | ".join(line.strip() for line in lines) if lines else "it wrote nothing"
        return f"{said} (log: {self.log_path})"

    def stop(self) -> int | None:
        """SIGTERM to the group, SIGKILL after ``grace_s``; the exit status (None: never started).

        What of the group outlives its leader is killed too: an engine's workers die with it.
        """
        process = self._process
        if process is None:
            return None
        if process.returncode is not None:
            return process.returncode  # stopped before
        if self._leader_status() is None:
            self._signal_group(signal.SIGTERM)
            if not self.ended_within(self.grace_s):
                logger.warning(
                    "server (pid %d) outlived SIGTERM by %g s: killed", process.pid, self.grace_s
                )
        # Its unreaped zombie keeps the group's id from being reused: this reaches ours only.
        self._signal_group(signal.SIGKILL)
        process.wait()
        logger.info("server stopped: %s", describe_status(process.returncode))
        return process.returncode

    def _leader_status(self) -> int | None:
        """The command's exit status, None while it runs; read without reaping it, so that its
        process-group id stays reserved for stop() to signal what is left of the group."""
        process = self._process
        if process is None:
            return None
        if process.returncode is not None:
            return process.returncode
        try:
            info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return process.poll()  # reaped already
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
            os.killpg(self._process.pid, sig)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
