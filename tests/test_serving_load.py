"""The serving client and load generator: SSE parsing and stream reading on bytes, prompt
lengths, the steady state on constructed timelines, Poisson arrivals and the level's figures;
then, when tests/serving.py provides a real server, levels against it."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time

import numpy as np
import pytest

from carbonbench.errors import InputError
from carbonbench.serving.client import (
    Endpoint,
    RequestRecord,
    SSEParser,
    check,
    list_models,
    parse_chunk,
    read_stream,
    request_body,
    send,
    server_message,
)
from carbonbench.serving.load import (
    Hooks,
    LevelTrace,
    SteadyState,
    closed_loop,
    closed_loop_steady,
    poisson_arrivals,
    poisson_steady,
)
from carbonbench.serving.prompts import WORDS, LengthSpec, make_prompts
from carbonbench.serving.stats import level_stats, percentiles, steady_tokens
from tests.serving import free_port


def sse(*chunks: dict | str) -> bytes:
    return b"".join(
        f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n".encode() for c in chunks
    )


def text_chunk(text: str, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "text": text, "finish_reason": finish}]}


def chat_chunk(content: str, finish: str | None = None) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}


def record_from(reads: list[tuple[float, bytes]], chat: bool = False) -> RequestRecord:
    record = RequestRecord(id=0, sent_at=0.0)
    read_stream(record, reads, chat)
    return record


# ---- SSE and chunks -------------------------------------------------------------------------


def test_sse_events_split_across_reads_with_comments_and_crlf() -> None:
    stream = b': keep-alive\r\n\r\ndata: {"a": 1}\r\n\r\ndata: line one\ndata: line two\n\n'
    stream += "data: é\n\n".encode()
    whole = SSEParser().feed(stream)
    assert whole == ['{"a": 1}', "line one\nline two", "é"]
    for size in (1, 2, 3, 7):  # every split, the 2-byte é too
        parser = SSEParser()
        events = []
        for i in range(0, len(stream), size):
            events += parser.feed(stream[i : i + size])
        assert events + parser.finish() == whole


def test_an_unterminated_last_event_is_dispatched_at_the_end() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"choi') == []
    assert parser.finish() == ['{"choi']


def test_chunks_completions_chat_usage_done_and_errors() -> None:
    assert parse_chunk(json.dumps(text_chunk("hi")), chat=False).text == "hi"
    assert parse_chunk(json.dumps(chat_chunk("yo")), chat=True).text == "yo"
    reasoning = {"choices": [{"delta": {"reasoning_content": "hm"}, "finish_reason": None}]}
    assert parse_chunk(json.dumps(reasoning), chat=True).text == "hm"
    role = {"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]}
    assert parse_chunk(json.dumps(role), chat=True).text == ""
    usage = parse_chunk(json.dumps(USAGE), chat=False)
    assert (usage.text, usage.prompt_tokens, usage.completion_tokens) == ("", 7, 3)
    assert parse_chunk(json.dumps(text_chunk("", "length")), chat=False).finished
    assert parse_chunk("[DONE]", chat=False).done
    assert (
        parse_chunk('{"error": {"message": "out of memory"}}', chat=True).error == "out of memory"
    )


def test_a_completions_stream_with_usage() -> None:
    body = sse(text_chunk("a"), text_chunk(" b"), text_chunk(" c", "length"), USAGE, "[DONE]")
    record = record_from([(1.0, body[:30]), (1.5, body[30:70]), (2.0, body[70:])])
    assert record.status == "ok", record.error
    assert (record.output_tokens, record.prompt_tokens, record.tokens_source) == (3, 7, "usage")
    assert len(record.chunk_times) == 3 and record.first_token_at == record.chunk_times[0]
    assert record.chunk_tokens == []  # the chunks did not say


def test_a_chat_stream_without_usage_counts_its_chunks() -> None:
    role = {"choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]}
    body = sse(role, chat_chunk("x"), chat_chunk("y"), chat_chunk("", "stop"), "[DONE]")
    record = record_from([(0.1, body)], chat=True)
    assert record.status == "ok"
    assert (record.output_tokens, record.prompt_tokens, record.tokens_source) == (2, None, "stream")
    assert record.itl_s == [0.0]  # one read: the chunks share its time


def test_tokens_per_chunk_from_continuous_usage() -> None:
    def counted(text: str, n: int) -> dict:
        return {**text_chunk(text), "usage": {"prompt_tokens": 4, "completion_tokens": n}}

    body = sse(
        counted("ab", 2),
        counted("c", 3),
        {**text_chunk("", "stop"), "usage": USAGE["usage"]},
        "[DONE]",
    )
    record = record_from([(0.1, body)])
    assert record.chunk_tokens == [2, 1] and record.output_tokens == 3


def test_a_stream_without_done_ends_properly_after_a_finish_reason() -> None:
    final = {**text_chunk("", "length"), "usage": USAGE["usage"]}  # transformers serve: no [DONE]
    record = record_from([(0.1, sse(text_chunk("a"), final))])
    assert record.status == "ok" and record.output_tokens == 3


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (sse(text_chunk("a")), "ended before the answer did"),
        (sse(text_chunk("a")) + b'data: {"choices": [{"te', "mid-JSON"),
        (sse(text_chunk("a"), '{"error": "CUDA error"}'), "mid-stream: CUDA error"),
        (sse(text_chunk("a"), "[1, 2]"), "not a JSON object"),
    ],
)
def test_broken_streams(body: bytes, error: str) -> None:
    record = record_from([(0.1, body)])
    assert record.status == "broken" and error in record.error
    assert record.chunk_times == [0.1] and record.output_tokens == 1


def test_a_read_that_fails_propagates_and_keeps_what_arrived() -> None:
    def reads():
        yield 0.5, sse(text_chunk("a"), text_chunk("b"))
        raise TimeoutError

    record = RequestRecord(id=0, sent_at=0.0)
    with pytest.raises(TimeoutError):
        read_stream(record, reads(), chat=False)
    assert record.first_token_at == 0.5 and record.output_tokens == 2


def test_server_messages_on_one_line() -> None:
    assert server_message(b'{"error": {"message": "too\\nlong", "code": 400}}') == "too long"
    assert server_message(b'{"detail": "Unexpected fields"}') == "Unexpected fields"
    assert server_message(b'{"detail": [{"msg": "field required"}]}') == "field required"
    assert server_message(b"Service Unavailable") == "Service Unavailable"


def test_request_body_sends_only_standard_fields_unless_given() -> None:
    endpoint = Endpoint("http://h:1", "m", chat=True)
    body = request_body(endpoint, "hello", 16)
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 16,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    extra = {"ignore_eos": True, "stream_options": {"continuous_usage_stats": True}}
    endpoint = Endpoint("http://h:1", "m", extra_body=extra)
    body = request_body(endpoint, "hello", 16)
    assert body["prompt"] == "hello" and body["ignore_eos"] is True
    assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}


def test_nothing_listening_is_one_line_and_a_broken_request() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(InputError, match=r"nothing answers at .* \(connection refused\)"):
        list_models(url)
    record = send(Endpoint(url, "m", timeout_s=5), "hi", 4, 0)
    assert record.status == "broken" and "refused" in record.error
    with pytest.raises(InputError, match="bad server URL"):
        check(Endpoint("localhost:8000", "m"))


# ---- prompts --------------------------------------------------------------------------------


def test_length_specs() -> None:
    rng = np.random.default_rng(0)
    assert LengthSpec.parse("64").sample(rng, 3) == [64, 64, 64]
    uniform = LengthSpec.parse("uniform:32-128").sample(rng, 2000)
    assert min(uniform) == 32 and max(uniform) == 128
    normal = LengthSpec.parse("normal:64,16").sample(rng, 5000)
    assert abs(np.mean(normal) - 64) < 1.5 and min(normal) >= 1
    assert min(LengthSpec.parse("normal:2,50").sample(rng, 1000)) == 1  # clipped
    for text in ("64", "uniform:32-128", "normal:64,16"):
        assert str(LengthSpec.parse(text)) == text


@pytest.mark.parametrize("text", ["0", "-3", "uniform:9-3", "normal:64", "lognormal:1,2", "x"])
def test_bad_length_specs_are_one_line(text: str) -> None:
    with pytest.raises(InputError, match=r"bad length .*give N, uniform:LOW-HIGH or normal"):
        LengthSpec.parse(text)


def test_prompts_are_reproducible_and_of_the_asked_lengths(tmp_path) -> None:
    spec, answers = LengthSpec.parse("uniform:5-40"), LengthSpec.parse("normal:16,4")
    prompts = make_prompts(20, spec, answers, seed=3)
    assert prompts == make_prompts(20, spec, answers, seed=3)
    assert prompts != make_prompts(20, spec, answers, seed=4)
    for prompt in prompts:
        words = prompt.text.split()
        assert len(words) == prompt.approx_tokens and 5 <= len(words) <= 40
        assert set(words) <= set(WORDS) and prompt.max_tokens >= 1
    assert len({prompt.text for prompt in prompts}) == 20
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one two three four five six seven")
    from_corpus = make_prompts(5, LengthSpec.parse("10"), LengthSpec.parse("8"), corpus, seed=1)
    order = ["one", "two", "three", "four", "five", "six", "seven"]
    for prompt in from_corpus:  # consecutive words, wrapping around
        words = prompt.text.split()
        start = order.index(words[0])
        assert words == [order[(start + i) % 7] for i in range(10)]


def test_a_bad_corpus_is_one_line(tmp_path) -> None:
    one = LengthSpec.parse("4")
    with pytest.raises(InputError, match="cannot read prompt corpus"):
        make_prompts(2, one, one, tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(InputError, match="has no words"):
        make_prompts(2, one, one, tmp_path / "empty.txt")


# ---- steady state and arrivals -------------------------------------------------------------


def test_closed_loop_steady_state_on_a_timeline() -> None:
    # Concurrency 2, 5 requests: 0 and 1 at t=0 and 0.1 (full), 0 ends at 1 and 2 is sent,
    # 1 ends at 1.5 and 3 is sent, 2 ends at 2 and 4 (the last) is sent; the first to end
    # after that is 3, at 2.5.
    sent = [0.0, 0.1, 1.0, 1.5, 2.0]
    finished = [1.0, 1.5, 2.0, 2.5, 3.0]
    assert closed_loop_steady(sent, finished, concurrency=2) == (0.1, 2.5)
    # Fewer requests than the concurrency: all in flight, until the first ends.
    assert closed_loop_steady([0.0, 0.2], [1.0, 0.9], concurrency=4) == (0.2, 0.9)
    # Requests that end as fast as they are sent never fill the level: no steady state.
    assert closed_loop_steady([0.0, 1.0, 2.0], [0.5, 1.5, 2.5], concurrency=2) is None


def test_poisson_steady_state_on_a_timeline() -> None:
    sent = [0.0, 0.3, 0.7, 1.2, 1.8]
    finished = [1.0, 1.4, 1.6, 2.5, 2.9]
    assert poisson_steady(sent, finished) == (1.0, 1.8)  # request 0's end to the last arrival
    assert poisson_steady([0.0, 0.1, 0.2], [1.0, 1.1, 1.2]) is None  # all sent before one ends


def test_poisson_arrivals_are_reproducible_with_mean_gap_one_over_rate() -> None:
    arrivals = poisson_arrivals(4.0, 20000, seed=7)
    assert arrivals == poisson_arrivals(4.0, 20000, seed=7)
    assert arrivals != poisson_arrivals(4.0, 20000, seed=8)
    assert arrivals[0] == 0.0 and len(arrivals) == 20000
    gaps = np.diff(arrivals)
    assert np.all(gaps >= 0)
    assert abs(gaps.mean() - 0.25) < 0.01  # standard error 0.25/sqrt(20000) = 0.0018
    assert abs(gaps.std() - 0.25) < 0.01  # exponential: the std is the mean
    with pytest.raises(InputError, match="bad rate"):
        poisson_arrivals(0, 3, seed=0)


# ---- figures --------------------------------------------------------------------------------


def ok_record(i: int, sent: float, chunks: list[float], tokens: int) -> RequestRecord:
    return RequestRecord(
        id=i,
        sent_at=sent,
        first_token_at=chunks[0],
        finished_at=chunks[-1],
        chunk_times=chunks,
        prompt_tokens=10,
        output_tokens=tokens,
        tokens_source="usage",
    )


def test_level_figures_on_a_constructed_trace() -> None:
    records = [
        ok_record(0, 0.0, [0.5, 1.0, 1.5, 2.0], 8),  # 2 of 4 chunks in [1, 2]... 3 with 2.0
        ok_record(1, 1.0, [1.2, 1.4], 2),  # all inside
        RequestRecord(id=2, sent_at=1.0, finished_at=1.1, status="rejected", http_status=429),
        RequestRecord(id=3, sent_at=1.0, finished_at=4.0, status="timeout"),
    ]
    trace = LevelTrace("concurrency", 2, records, 0.0, 4.0, steady_start=1.0, steady_end=2.0)
    stats = level_stats(trace)
    assert stats.counts == {"ok": 2, "rejected": 1, "timeout": 1, "broken": 0}
    assert stats.output_tokens == 10 and stats.prompt_tokens == 20
    assert stats.steady_output_tokens == pytest.approx(8 * 3 / 4 + 2)
    assert stats.tokens_per_s == pytest.approx(10 / 4) and stats.steady_s == 1.0
    assert stats.ttft is not None and stats.ttft.p50 == pytest.approx(0.35)  # 0.5 and 0.2
    assert stats.ttft.p90 == pytest.approx(0.2 + 0.9 * 0.3)
    itl = percentiles([0.5, 0.5, 0.5, 0.2])
    assert stats.itl == itl
    extra = stats.to_extra()
    assert extra["requests_ok"] == 2 and extra["requests_rejected"] == 1
    assert extra["requests_timeout"] == 1 and extra["requests_broken"] == 0
    assert extra["tokens_source"] == "usage" and extra["e2e_p50_s"] == pytest.approx(1.2)
    assert {"ttft_p99_s", "itl_p90_s", "e2e_p99_s", "steady_s", "output_tokens"} <= set(extra)


def test_percentiles_are_numpy_linear_and_tokens_by_chunk_when_known() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    figures = percentiles(values)
    assert figures is not None and figures.p50 == 3.0
    assert figures.p90 == pytest.approx(4 + 0.6 * 6) and figures.p99 == pytest.approx(4 + 0.96 * 6)
    assert percentiles([]) is None
    record = ok_record(0, 0.0, [1.0, 2.0, 3.0], 6)
    record.chunk_tokens = [1, 4, 1]
    assert steady_tokens(record, 1.5, 3.5) == 5.0
    assert level_stats(LevelTrace("rate", 1.0, [], 0.0, 1.0)).to_extra()["tokens_source"] == "none"


# ---- against a real server (tests/serving.py) -----------------------------------------------


class Boundaries:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def hooks(self) -> Hooks:
        return Hooks(
            on_steady_start=lambda: self.calls.append("start"),
            on_steady_end=lambda: self.calls.append("end"),
        )


@pytest.mark.slow
@pytest.mark.parametrize(("concurrency", "chat"), [(2, False), (4, True)])
def test_closed_loop_against_a_real_server(tiny_server, concurrency: int, chat: bool) -> None:
    endpoint = Endpoint(tiny_server.url, tiny_server.model, chat=chat, timeout_s=120)
    check(endpoint)
    prompts = make_prompts(8, LengthSpec.parse("16"), LengthSpec.parse("16"), seed=0)
    boundaries = Boundaries()
    trace = closed_loop(endpoint, prompts, concurrency, 8, boundaries.hooks())
    assert trace.counts() == {"ok": 8, "rejected": 0, "timeout": 0, "broken": 0}, [
        record.error for record in trace.records
    ]
    assert not trace.aborted and boundaries.calls == ["start", "end"]
    assert trace.steady_start is not None and trace.steady_end is not None
    assert trace.started_at < trace.steady_start < trace.steady_end <= trace.ended_at
    sent = [record.sent_at for record in trace.records]
    finished = [record.finished_at for record in trace.records]
    replayed = closed_loop_steady(sent, finished, concurrency)
    assert replayed is not None
    assert replayed == pytest.approx((trace.steady_start, trace.steady_end), abs=0.05)
    for record in trace.records:
        assert record.tokens_source == "usage" and 0 < record.output_tokens <= 16
        assert record.prompt_tokens and record.ttft_s is not None and record.ttft_s > 0
    extra = level_stats(trace).to_extra()
    assert extra["tokens_source"] == "usage" and 0 < extra["steady_output_tokens"] <= 128


@pytest.mark.slow
def test_a_model_the_server_does_not_serve_is_one_line(tiny_server) -> None:
    message = rf"does not list model 'no-such-model'; it lists: {re.escape(tiny_server.model)}"
    with pytest.raises(InputError, match=message):
        check(Endpoint(tiny_server.url, "no-such-model"))


@pytest.mark.slow
def test_a_server_that_dies_aborts_the_level_at_once(fresh_tiny_server) -> None:
    process = fresh_tiny_server.process
    endpoint = Endpoint(fresh_tiny_server.url, fresh_tiny_server.model, timeout_s=120)
    prompts = make_prompts(4, LengthSpec.parse("8"), LengthSpec.parse("4000"), seed=0)
    boundaries = Boundaries()
    hooks = boundaries.hooks()
    hooks.alive = process.alive
    threading.Timer(1.0, os.kill, (process.pid, signal.SIGKILL)).start()
    began = time.perf_counter()
    trace = closed_loop(endpoint, prompts, 2, 1000, hooks)
    assert time.perf_counter() - began < 15  # not the requests' 120 s timeouts
    assert trace.aborted and trace.abort_reason == "the server is no longer alive"
    assert boundaries.calls == ["start", "end"]  # the window opened is closed
    assert trace.counts()["ok"] == 0 and len(trace.records) < 1000


def test_the_steady_hooks_fire_once_each_in_order_and_never_after_an_abort() -> None:
    boundaries = Boundaries()
    steady = SteadyState("rate", 1, 3, boundaries.hooks())
    steady.sent(0.0)
    steady.abort(0.5)  # before request 0 finished: no window, not even later
    steady.finished(1.0, first=True)
    assert boundaries.calls == [] and steady.start is None
    steady = SteadyState("concurrency", 2, 3, boundaries.hooks())
    for at in (0.0, 0.1):
        steady.sent(at)
    steady.finished(1.0, first=True)
    steady.sent(1.0)
    steady.abort(1.2)  # an open window is closed at the abort
    steady.finished(1.5, first=False)
    assert boundaries.calls == ["start", "end"] and (steady.start, steady.end) == (0.1, 1.2)
