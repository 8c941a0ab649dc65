"""The server ``carbonbench serving --server`` starts: a real ``transformers serve`` with the
tiny Llama (skipped without the serving extra), and commands that fail in each way."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from carbonbench.errors import InputError
from carbonbench.serving.server import ServerProcess, describe_status
from tests.serving import free_port, require_serving, stream_chat


def test_the_tiny_llama_loads_with_transformers_and_generates(tiny_llama) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    assert prompt["input_ids"][0, 0].item() == tokenizer.bos_token_id
    output = model.generate(**prompt, max_new_tokens=16, do_sample=False)
    # </s> is never the greedy choice: a reply runs to the tokens asked for.
    assert output.shape[1] == prompt["input_ids"].shape[1] + 16


def test_the_same_arguments_write_the_same_model(tmp_path) -> None:
    require_serving()
    from carbonbench.serving.tiny import write_tiny_llama

    first = write_tiny_llama(tmp_path / "a", text="energy per token " * 50, vocab_size=300)
    second = write_tiny_llama(tmp_path / "b", text="energy per token " * 50, vocab_size=300)
    for name in ("tokenizer.json", "model.safetensors", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    with pytest.raises(InputError, match="vocab_size 100 is too small"):
        write_tiny_llama(tmp_path / "c", vocab_size=100)


def test_the_server_comes_up_streams_a_reply_and_stops(fresh_tiny_server) -> None:
    process = fresh_tiny_server.process
    assert process.alive() and process.exit_status is None
    assert process.ready_s is not None and process.ready_s > 0
    chunks = stream_chat(fresh_tiny_server, "Hello", max_tokens=8)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 8
    assert any(chunk["choices"][0]["delta"].get("content") for chunk in chunks)
    status = process.stop()
    assert not process.alive() and process.exit_status == status is not None
    assert process.stop() == status  # a second stop is harmless


def test_the_session_server_serves_concurrent_streams(tiny_server) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda i: stream_chat(tiny_server, f"Hi {i}", 16), range(4)))
    assert [reply[-1]["usage"]["completion_tokens"] for reply in replies] == [16] * 4
    assert tiny_server.process.alive()


def test_killing_the_server_shows_in_alive_and_exit_status(fresh_tiny_server) -> None:
    process = fresh_tiny_server.process
    assert process.alive() and not process.ended_within(0.05)
    os.kill(process.pid, signal.SIGKILL)
    assert process.ended_within(10)  # its exit status readable a moment after its sockets close
    assert not process.alive()
    assert process.exit_status == -signal.SIGKILL
    assert describe_status(process.exit_status) == "signal 9 (SIGKILL)"
    assert process.last_lines(3)  # what it said before it died, for the run's message
    assert process.stop() == -signal.SIGKILL


def test_a_command_that_exits_at_once_says_its_status_and_last_lines(tmp_path) -> None:
    code = "import sys; print('loading'); print('no such model', file=sys.stderr); sys.exit(3)"
    log = tmp_path / "server.log"
    server = ServerProcess([sys.executable, "-c", code], f"http://127.0.0.1:{free_port()}", log)
    with pytest.raises(InputError) as error:
        server.start()
    message = str(error.value)
    assert "\n" not in message
    assert "exited with status 3 before it answered" in message
    assert "loading | no such model" in message and str(log) in message
    assert server.exit_status == 3 and not server.alive()
    assert server.last_lines(1) == ["no such model"]


def test_a_command_given_as_one_string_is_split_like_a_shell(tmp_path) -> None:
    port = free_port()
    command = f'{sys.executable} -c "import sys; sys.exit(3)"'
    server = ServerProcess(command, f"http://127.0.0.1:{port}/v1/", tmp_path / "log")
    assert server.argv == [sys.executable, "-c", "import sys; sys.exit(3)"]
    assert server.url == f"http://127.0.0.1:{port}"  # an OpenAI base URL's /v1 is dropped
    with pytest.raises(InputError, match=r"exited with status 3 .*: it wrote nothing"):
        server.start()


def test_a_command_that_never_answers_is_stopped_after_the_timeout(tmp_path) -> None:
    port = free_port()
    command = [sys.executable, "-c", "import time; print('sleeping'); time.sleep(60)"]
    server = ServerProcess(command, f"http://127.0.0.1:{port}", tmp_path / "log", timeout_s=1.5)
    started = time.monotonic()
    with pytest.raises(InputError) as error:
        server.start()
    assert time.monotonic() - started < 15
    message = str(error.value)
    assert f"did not answer at http://127.0.0.1:{port}/health in 1.5 s" in message
    assert "sleeping" in message and "\n" not in message
    assert not server.alive() and server.exit_status == -signal.SIGTERM


def _gone(pid: int) -> bool:
    """Ended: no such process, or a zombie (which a container's init may never reap)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_stop_reaches_the_whole_process_group(tmp_path) -> None:
    pid_file = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    # Nothing listens on port 9: start() gives up after the timeout and stops the group.
    server = ServerProcess(
        ["bash", "-c", script], "http://127.0.0.1:9", tmp_path / "log", timeout_s=1.0
    )
    with pytest.raises(InputError, match="did not answer"):
        server.start()
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(child)


def test_bad_commands_and_urls_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(InputError, match="server command is empty"):
        ServerProcess("  ", "http://127.0.0.1:1", tmp_path / "log")
    with pytest.raises(InputError, match="cannot be split"):
        ServerProcess('serve "unclosed', "http://127.0.0.1:1", tmp_path / "log")
    with pytest.raises(InputError, match="is not http"):
        ServerProcess("serve", "127.0.0.1:8000", tmp_path / "log")
    missing = ServerProcess("no-such-server-binary --port 1", "http://127.0.0.1:1", tmp_path / "l")
    with pytest.raises(InputError, match="cannot start: No such file or directory"):
        missing.start()
