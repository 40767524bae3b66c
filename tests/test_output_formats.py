"""The output guard in every answer format it reads, through one table: each row is a provider's wire format
(tests/support/answer_streams.py) and the official SDK that reads it. In enforce mode a safe stream reaches the
client byte for byte, an unsafe one makes the SDK raise mid-iteration with nothing unsafe delivered, and an unsafe
plain answer is refused with a status the SDK does not retry; audit mode relays byte for byte."""

from __future__ import annotations

import json
import logging
import re
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import anthropic
import boto3
import cohere
from cohere.core.http_sse import SSEError
from cohere.errors import UnprocessableEntityError
import httpx
import openai
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from werkzeug.test import Client
from werkzeug.wrappers import Response

from lockllm_wsgi.formats.bedrock import CREDENTIALS
from lockllm_wsgi.formats.cohere import SDK_MAX_LINE_CHARS
from support.answer_streams import BEDROCK_CLAUDE, BEDROCK_MODEL, GEMINI_MODEL, SYSTEM, WIRES, Wire
from support.fakes import ATTACK

ENFORCE = "[output]\nmode = enforce\nholdback_chars = 200\n"
SAFE = "Here is a long and perfectly harmless introduction. " * 8  # past the holdback: sent before the attack


@pytest.fixture(autouse=True)
def gateway_aws_credentials(monkeypatch):
    """Bedrock rows: the gateway signs with its own AWS identity, from its environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAGATEWAYGATEWAY01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "gateway-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    CREDENTIALS.forget()
    yield
    CREDENTIALS.forget()


@dataclass(frozen=True)
class Sdk:
    """How the format's official SDK is called through the gateway, and what it raises."""

    stream: Callable[[Any, Wire], Iterator[str]]  # (gateway, wire) -> the answer's texts as the SDK yields them
    plain: Callable[[Any, Wire], str]
    cut: type[BaseException]  # raised mid-iteration on the gateway's error event
    refused: type[BaseException]  # raised on a refused plain answer
    code: Callable[[Any], str]  # the refusal's code, read from what the SDK raised
    # Whether what the SDK raises on a cut says why. The cohere SDK raises a transport error after yielding the
    # error event that says why (test_a_cohere_caller_reads_why_its_stream_was_cut_then_the_sdk_raises).
    cut_says_why: bool = True


def _openai(gateway, wire: Wire) -> openai.OpenAI:
    # The SDK's default retries stay on: a refused answer must not be asked for again. Azure's v1 API is called
    # with the plain OpenAI client under its /openai/v1 base.
    base = "/openai/v1" if wire.route == "azure" else "/v1"
    return openai.OpenAI(base_url=f"{gateway.url}/{wire.route}{base}", api_key="sk-test", timeout=10)


def _anthropic(gateway, wire: Wire) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{gateway.url}/{wire.route}", api_key="sk-ant-test", timeout=10)


def _genai(gateway, wire: Wire) -> genai.Client:
    # Retries on with the SDK's defaults: a refused answer must not be asked for again.
    return genai.Client(api_key="AIza-test", http_options=genai_types.HttpOptions(
        base_url=f"{gateway.url}/{wire.route}", timeout=10_000, retry_options=genai_types.HttpRetryOptions()))


def _genai_stream(gateway, wire: Wire) -> Iterator[str]:
    client = _genai(gateway, wire)
    try:
        yield from (chunk.text or "" for chunk in client.models.generate_content_stream(
            model=GEMINI_MODEL, contents="hi", config=genai_types.GenerateContentConfig(system_instruction=SYSTEM)))
    finally:
        client.close()


def _genai_plain(gateway, wire: Wire) -> str:
    with _genai(gateway, wire) as client:
        return client.models.generate_content(model=GEMINI_MODEL, contents="hi").text


def _cohere_events(gateway, wire: Wire) -> Iterator[Any]:
    """Every event the cohere SDK yields for the wire's stream (v1 or v2 client by the wire's path)."""
    client = (cohere.Client if wire.path.startswith("/v1/") else cohere.ClientV2)(
        api_key="co-test", base_url=f"{gateway.url}/{wire.route}", timeout=10)
    yield from client.chat_stream(**wire.request)


def _cohere_v2_stream(gateway, wire: Wire) -> Iterator[str]:
    return (event.delta.message.content.text for event in _cohere_events(gateway, wire)
            if event.type == "content-delta")


def _cohere_v1_stream(gateway, wire: Wire) -> Iterator[str]:
    return (event.text for event in _cohere_events(gateway, wire) if event.event_type == "text-generation")


def _bedrock(gateway, wire: Wire):
    # boto3's standard retries stay on: a refused answer must not be asked for again.
    return boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=f"{gateway.url}/{wire.route}",
                        aws_access_key_id="AKIACLIENTCLIENT0001", aws_secret_access_key="client-secret",
                        config=Config(retries={"mode": "standard"}))


def _converse_stream(gateway, wire: Wire) -> Iterator[str]:
    with closing(_bedrock(gateway, wire)) as client, closing(
            client.converse_stream(modelId=BEDROCK_MODEL, **wire.request)["stream"]) as stream:
        yield from (event["contentBlockDelta"]["delta"]["text"] for event in stream if "contentBlockDelta" in event)


def _converse_plain(gateway, wire: Wire) -> str:
    with closing(_bedrock(gateway, wire)) as client:
        return client.converse(modelId=BEDROCK_MODEL, **wire.request)["output"]["message"]["content"][0]["text"]


def _invoke_stream(gateway, wire: Wire) -> Iterator[str]:
    with closing(_bedrock(gateway, wire)) as client, closing(client.invoke_model_with_response_stream(
            modelId=BEDROCK_CLAUDE, body=json.dumps(wire.request), contentType="application/json")["body"]) as stream:
        events = (json.loads(event["chunk"]["bytes"]) for event in stream)
        yield from (event["delta"]["text"] for event in events if event["type"] == "content_block_delta")


def _invoke_plain(gateway, wire: Wire) -> str:
    with closing(_bedrock(gateway, wire)) as client:
        reply = client.invoke_model(modelId=BEDROCK_CLAUDE, body=json.dumps(wire.request),
                                    contentType="application/json")
        return json.loads(reply["body"].read())["content"][0]["text"]


def _message_code(message: str) -> str:
    # Cohere's and Bedrock's error bodies carry a message and no code: the message names the output guard.
    return "output_blocked" if "output guard" in message else message


def _bedrock_code(error: Any) -> str:
    return _message_code(error.response["Error"]["Message"])


def _cohere_code(error: Any) -> str:
    return _message_code(error.body["message"])


RESPONSES = Sdk(
    stream=lambda gateway, wire: (event.delta for event in _openai(gateway, wire).responses.create(
        **wire.request, stream=True) if event.type == "response.output_text.delta"),
    plain=lambda gateway, wire: _openai(gateway, wire).responses.create(**wire.request).output_text,
    cut=openai.APIError, refused=openai.UnprocessableEntityError, code=lambda error: error.code)
SDKS = {
    "openai-chat": Sdk(
        stream=lambda gateway, wire: (event.choices[0].delta.content or "" for event in _openai(
            gateway, wire).chat.completions.create(**wire.request, stream=True)),
        plain=lambda gateway, wire: _openai(gateway, wire).chat.completions.create(**wire.request).choices[
            0].message.content,
        cut=openai.APIError, refused=openai.UnprocessableEntityError, code=lambda error: error.code),
    "openai-responses": RESPONSES,
    "azure-responses": RESPONSES,
    "anthropic": Sdk(
        stream=lambda gateway, wire: (event.delta.text for event in _anthropic(gateway, wire).messages.create(
            **wire.request, stream=True) if event.type == "content_block_delta"),
        plain=lambda gateway, wire: _anthropic(gateway, wire).messages.create(**wire.request).content[0].text,
        cut=anthropic.APIStatusError, refused=anthropic.UnprocessableEntityError,
        code=lambda error: error.body["error"]["details"]["error_code"]),
    "cohere-v2": Sdk(
        stream=_cohere_v2_stream,
        plain=lambda gateway, wire: cohere.ClientV2(api_key="co-test", base_url=f"{gateway.url}/{wire.route}",
                                                    timeout=10).chat(**wire.request).message.content[0].text,
        cut=SSEError, refused=UnprocessableEntityError, code=_cohere_code, cut_says_why=False),
    "cohere-v1": Sdk(
        stream=_cohere_v1_stream,
        plain=lambda gateway, wire: cohere.Client(api_key="co-test", base_url=f"{gateway.url}/{wire.route}",
                                                  timeout=10).chat(**wire.request).text,
        cut=httpx.RemoteProtocolError, refused=UnprocessableEntityError, code=_cohere_code, cut_says_why=False),
    "bedrock-converse": Sdk(
        stream=_converse_stream,
        plain=_converse_plain,
        cut=EventStreamError, refused=ClientError, code=_bedrock_code),
    "bedrock-invoke": Sdk(
        stream=_invoke_stream, plain=_invoke_plain, cut=EventStreamError, refused=ClientError,
        code=_bedrock_code),
    "gemini": Sdk(stream=_genai_stream, plain=_genai_plain, cut=genai_errors.ClientError,
                  refused=genai_errors.ClientError,
                  code=lambda error: error.details["error"]["details"][0]["reason"].lower()),
}
ROWS = [pytest.param(WIRES[name], sdk, id=name) for name, sdk in SDKS.items()]
# Every answer format, with or without an SDK (no SDK streams Gemini's JSON array: google-genai asks for SSE).
WIRE_ROWS = [pytest.param(wire, id=name) for name, wire in WIRES.items()]


def serve(provider, wire: Wire, stream: list[bytes] | None = None, plain: dict | None = None) -> None:
    """The fake provider answers the wire's path with a stream (one write per event) or a plain answer."""
    path = wire.stream_path or wire.path if stream is not None else wire.path
    # SDK releases differ in the API version they call (Gemini's v1beta or v1); the gateway serves both.
    uri = re.compile(re.escape(path).replace("v1beta", "v1(?:beta)?") + "$")
    if stream is not None:
        provider.expect_request(uri, method="POST").respond_with_handler(
            lambda _request: Response(iter(stream), content_type=wire.content_type))
    else:
        provider.expect_request(uri, method="POST").respond_with_json(plain)


def gateway_for(make_gateway, wire: Wire, extra: str):
    """A gateway with a route for the wire's format (the openai route is always there)."""
    return make_gateway(extra=extra, routes={wire.route: wire.route_keys} if wire.route != "openai" else None)


def raw_stream(gateway, wire: Wire, dropped: bool = False) -> bytes:
    """The bytes a client receives for the wire's streamed request; `dropped`: the connection must drop before the
    chunked body's end (a cut cohere v1 stream), else the body must end cleanly."""
    url = f"{gateway.url}/{wire.route}{wire.stream_path or wire.path}{wire.stream_query}"
    received = []
    with httpx.Client(timeout=10) as http, http.stream("POST", url, json=wire.stream_request(),
                                                        headers={"Authorization": "Bearer sk-test"}) as answer:
        try:
            received += answer.iter_raw()
        except httpx.RemoteProtocolError:
            if not dropped:
                raise
        else:
            assert not dropped, "the body ended cleanly"
    return b"".join(received)


@pytest.mark.parametrize("wire", WIRE_ROWS)
def test_a_safe_stream_reaches_the_client_byte_for_byte_in_enforce_mode(wire, make_gateway, provider):
    events = wire.events(["Hel", "lo ", "there"])
    serve(provider, wire, stream=events)
    assert raw_stream(gateway_for(make_gateway, wire, ENFORCE), wire) == b"".join(events)


@pytest.mark.parametrize("wire, sdk", ROWS)
def test_a_safe_stream_reaches_the_sdk_whole_in_enforce_mode(wire, sdk, make_gateway, provider):
    serve(provider, wire, stream=wire.events(["Hel", "lo ", "there"]))
    assert "".join(sdk.stream(gateway_for(make_gateway, wire, ENFORCE), wire)) == "Hello there"


@pytest.mark.parametrize("wire", WIRE_ROWS)
def test_audit_mode_relays_an_unsafe_stream_byte_for_byte_and_flags_it(wire, make_gateway, provider,
                                                                       request_log_lines):
    events = wire.events(["Sure: ", ATTACK, " and more"])
    serve(provider, wire, stream=events)
    gateway = gateway_for(make_gateway, wire, "[output]\nmode = audit\n")
    assert raw_stream(gateway, wire) == b"".join(events)
    assert request_log_lines.wait_for(1)
    logged = json.loads(request_log_lines[0])
    assert (logged["output"], logged["output_findings"]) == ("flagged", ["prompt_injection_detected"])


@pytest.mark.parametrize("wire, sdk", ROWS)
def test_an_unsafe_stream_makes_the_sdk_raise_mid_iteration_with_nothing_unsafe_delivered(wire, sdk, make_gateway,
                                                                                        provider):
    serve(provider, wire, stream=wire.events([SAFE, "Now: ", ATTACK, " the end"]))
    gateway = gateway_for(make_gateway, wire, ENFORCE)
    seen: list[str] = []
    with pytest.raises(sdk.cut) as cut:
        for text in sdk.stream(gateway, wire):
            seen.append(text)
    assert "".join(seen) == SAFE  # the judged part arrived; nothing of what followed it
    assert "output guard" in str(cut.value) or not sdk.cut_says_why
    assert len(provider.log) == 1


@pytest.mark.parametrize("wire, sdk", ROWS)
def test_an_unsafe_plain_answer_is_refused_once_without_a_retry(wire, sdk, make_gateway, provider):
    serve(provider, wire, plain=wire.plain(f"Of course. {ATTACK}"))
    gateway = gateway_for(make_gateway, wire, ENFORCE)
    with pytest.raises(sdk.refused) as refused:
        sdk.plain(gateway, wire)
    assert sdk.code(refused.value) == "output_blocked"
    assert ATTACK not in str(refused.value)
    assert len(provider.log) == 1  # the SDK did not retry


@pytest.mark.parametrize("wire, sdk", ROWS)
def test_a_safe_plain_answer_is_relayed_in_enforce_mode(wire, sdk, make_gateway, provider):
    serve(provider, wire, plain=wire.plain("Hello!"))
    gateway = gateway_for(make_gateway, wire, ENFORCE)
    assert sdk.plain(gateway, wire) == "Hello!"


@pytest.mark.parametrize("wire", WIRE_ROWS)
def test_a_cut_stream_ends_with_the_error_event_and_no_invented_end_marker(wire, make_gateway, provider):
    events = wire.events([SAFE, "Now: ", ATTACK, " the end"])
    serve(provider, wire, stream=events)
    received = raw_stream(gateway_for(make_gateway, wire, ENFORCE), wire, dropped=wire.name == "cohere-v1")
    assert received.startswith(events[0]) and events[-1] not in received
    assert ATTACK.encode() not in received and b"output guard" in received


def test_a_cut_json_array_stream_is_still_one_json_array_ending_with_the_error(make_gateway, provider):
    wire = WIRES["gemini-array"]
    serve(provider, wire, stream=wire.events([SAFE, ATTACK]))
    elements = json.loads(raw_stream(gateway_for(make_gateway, wire, ENFORCE), wire))
    assert elements[0]["candidates"][0]["content"]["parts"][0]["text"] == SAFE
    assert elements[-1]["error"]["details"][0]["reason"] == "OUTPUT_BLOCKED" and len(elements) == 2


COHERE = [pytest.param(WIRES["cohere-v2"], "message-end", SSEError, id="cohere-v2"),
          pytest.param(WIRES["cohere-v1"], "stream-end", httpx.RemoteProtocolError, id="cohere-v1")]


@pytest.mark.parametrize("wire, last, raised", COHERE)
def test_a_cohere_caller_reads_why_its_stream_was_cut_then_the_sdk_raises(wire, last, raised, make_gateway, provider,
                                                                          request_log_lines, caplog):
    """The SDK yields Cohere's failed-generation end, naming the output guard, as the last event; then it raises
    (v2 on the unfinished over-long line after it, v1 on the dropped connection). The request is logged once, as
    blocked, and the server logs no error for the dropped connection."""
    serve(provider, wire, stream=wire.events([SAFE, "Now: ", ATTACK, " the end"]))
    gateway = gateway_for(make_gateway, wire, ENFORCE)
    events: list[Any] = []
    with pytest.raises(raised):
        events += _cohere_events(gateway, wire)  # keeps what it took before the raise
    end = events[-1]
    assert (getattr(end, "type", None) or end.event_type) == last
    finish_reason, error = (end.delta.finish_reason, end.delta.error) if last == "message-end" else (
        end.finish_reason, end.error)
    assert finish_reason == "ERROR" and "output guard" in error
    assert ATTACK not in repr(events)
    assert request_log_lines.wait_for(1) and len(request_log_lines) == 1
    assert json.loads(request_log_lines[0])["output"] == "blocked"
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_a_cut_cohere_v2_stream_ends_cleanly_after_an_unfinished_comment_line_no_sse_reader_dispatches(
        make_gateway, provider):
    wire = WIRES["cohere-v2"]
    serve(provider, wire, stream=wire.events([SAFE, ATTACK]))
    received = raw_stream(gateway_for(make_gateway, wire, ENFORCE), wire)
    events, _, unfinished = received.rpartition(b"\n\n")
    assert events.endswith(b'"finish_reason": "ERROR", "error": "output_blocked: The model\'s answer was stopped by '
                           b"the gateway's output guard (prompt_injection_detected); the part already sent had been "
                           b'judged safe. (request id ' + events.rsplit(b"(request id ", 1)[1])
    assert unfinished.startswith(b": ") and b"\n" not in unfinished and len(unfinished) > SDK_MAX_LINE_CHARS


def test_under_mod_wsgi_daemon_mode_a_cut_cohere_v1_stream_ends_cleanly_after_its_error_event(make_gateway,
                                                                                                provider):
    """mod_wsgi's Apache child ends the chunked body cleanly whatever its daemon process raises (and mod_wsgi logs
    what it raised as an error), so there the gateway does not raise: the caller reads the error event, then the
    end (tests/integration/test_apache.py drives the real server)."""
    wire = WIRES["cohere-v1"]
    serve(provider, wire, stream=wire.events([SAFE, ATTACK]))
    gateway = gateway_for(make_gateway, wire, ENFORCE)
    answer = Client(gateway.app).post("/cohere/v1/chat", json=wire.stream_request(),
                                      headers={"Authorization": "Bearer co-test"},
                                      environ_base={"mod_wsgi.process_group": "lockllm"})
    *_, last = answer.get_data().splitlines()
    assert json.loads(last)["finish_reason"] == "ERROR" and "output guard" in json.loads(last)["error"]
