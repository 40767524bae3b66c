"""End to end: `boto3`'s bedrock-runtime client through the gateway's `bedrock` route to a fake Bedrock, which
checks that the request it gets is signed with the gateway's AWS credentials and never with the client's."""

from __future__ import annotations

import json
import re

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from werkzeug.wrappers import Request, Response

from lockllm_wsgi.config import ConfigError
from lockllm_wsgi.formats import FORMATS
from lockllm_wsgi.formats.bedrock import CREDENTIALS, signing_region
from support.answer_streams import aws_event as event
from support.fakes import ATTACK

MODEL = "amazon.nova-lite-v1:0"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
REGION = "us-east-1"
CLIENT_KEY, CLIENT_SECRET, CLIENT_TOKEN = "AKIACLIENTCLIENT0001", "client-secret", "client-session-token"
GATEWAY_KEY, GATEWAY_SECRET = "AKIAGATEWAYGATEWAY01", "gateway-secret"
ROUTES = {"bedrock": f"region = {REGION}"}
REPLY = {"output": {"message": {"role": "assistant", "content": [{"text": "Hello!"}]}}, "stopReason": "end_turn",
         "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}, "metrics": {"latencyMs": 1}}
_AUTHORIZATION = re.compile(r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/\d{8}/(?P<region>[^/]+)/bedrock/aws4_request, "
                            r"SignedHeaders=(?P<signed>[^,]+), Signature=(?P<signature>[0-9a-f]+)$")


@pytest.fixture(autouse=True)
def gateway_credentials(monkeypatch):
    """The gateway's AWS identity comes from its environment; the client has its own (static, fake) one."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", GATEWAY_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", GATEWAY_SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    CREDENTIALS.forget()
    yield
    CREDENTIALS.forget()


def client(gateway):
    return boto3.client("bedrock-runtime", region_name=REGION, endpoint_url=f"{gateway.url}/bedrock",
                        aws_access_key_id=CLIENT_KEY, aws_secret_access_key=CLIENT_SECRET,
                        aws_session_token=CLIENT_TOKEN, config=Config(retries={"max_attempts": 1}))


def assert_signed_by_gateway(received: Request) -> None:
    """Recompute the SigV4 signature from what the provider received, with the gateway's secret."""
    match = _AUTHORIZATION.match(received.headers["Authorization"])
    assert match and match["key"] == GATEWAY_KEY and match["region"] == REGION
    assert "X-Amz-Security-Token" not in received.headers  # the client's session token stayed behind
    signed = match["signed"].split(";")
    request = AWSRequest(method=received.method, url=f"http://{received.host}{received.environ['RAW_URI']}",
                         data=received.get_data(), headers={name: received.headers[name] for name in signed})
    request.context["timestamp"] = received.headers["X-Amz-Date"]
    signer = SigV4Auth(Credentials(GATEWAY_KEY, GATEWAY_SECRET), "bedrock", REGION)
    assert signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request) == \
        match["signature"]


def test_clean_converse_reaches_bedrock_unchanged_and_signed_by_the_gateway(make_gateway, provider):
    provider.expect_request(f"/model/{MODEL}/converse", method="POST").respond_with_json(REPLY)
    gateway = make_gateway(routes=ROUTES)
    messages = [{"role": "user", "content": [{"text": "Say hello"}]}]
    reply = client(gateway).converse(modelId=MODEL, messages=messages, system=[{"text": "Be brief."}])
    assert reply["output"]["message"]["content"][0]["text"] == "Hello!"
    (received, _), = provider.log
    assert json.loads(received.get_data()) == {"messages": messages, "system": [{"text": "Be brief."}]}
    assert CLIENT_KEY not in str(received.headers)
    assert_signed_by_gateway(received)


def test_clean_converse_stream_is_relayed(make_gateway, provider):
    stream = b"".join([
        event("messageStart", {"role": "assistant"}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "lo"}}),
        event("messageStop", {"stopReason": "end_turn"}),
    ])
    provider.expect_request(f"/model/{MODEL}/converse-stream", method="POST").respond_with_response(
        Response(stream, content_type="application/vnd.amazon.eventstream"))
    gateway = make_gateway(routes=ROUTES)
    reply = client(gateway).converse_stream(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    pieces = [item["contentBlockDelta"]["delta"]["text"] for item in reply["stream"] if "contentBlockDelta" in item]
    assert pieces == ["Hel", "lo"]
    (received, _), = provider.log
    assert_signed_by_gateway(received)


def test_clean_invoke_model_for_claude_is_relayed(make_gateway, provider):
    provider.expect_request(f"/model/{CLAUDE}/invoke", method="POST").respond_with_json({"content": []})
    gateway = make_gateway(routes=ROUTES)
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10,
                       "messages": [{"role": "user", "content": "hi"}]})
    client(gateway).invoke_model(modelId=CLAUDE, body=body, contentType="application/json")
    (received, _), = provider.log
    assert received.get_data(as_text=True) == body
    assert_signed_by_gateway(received)


TOOL_USE = {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "lookup", "input": {"q": "x"}}}]}


@pytest.mark.parametrize("fields, where", [
    pytest.param({"system": [{"text": ATTACK}]}, "system[0].text", id="system"),
    pytest.param({"messages": [{"role": "user", "content": [{"text": "hi"}]},
                               {"role": "assistant", "content": [{"text": ATTACK}]},
                               {"role": "user", "content": [{"text": "go on"}]}]}, "messages[1].content[0].text",
                 id="earlier-turn"),
    pytest.param({"messages": [{"role": "user", "content": [{"text": "hi"}]}, {"role": "assistant", "content": [
        {"toolUse": {"toolUseId": "t1", "name": "lookup", "input": {"q": ATTACK}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "ok"}]}}]}]},
        "messages[1].content[0].toolUse.input.q", id="tool-use-input"),
    pytest.param({"messages": [{"role": "user", "content": [{"text": "hi"}]}, TOOL_USE, {"role": "user", "content": [
        {"toolResult": {"toolUseId": "t1", "content": [{"text": ATTACK}]}}]}]},
        "messages[2].content[0].toolResult.content[0].text", id="tool-result-text"),
    pytest.param({"messages": [{"role": "user", "content": [{"text": "hi"}]}, TOOL_USE, {"role": "user", "content": [
        {"toolResult": {"toolUseId": "t1", "content": [{"json": {"answer": ATTACK}}]}}]}]},
        "messages[2].content[0].toolResult.content[0].json.answer", id="tool-result-json"),
    pytest.param({"toolConfig": {"tools": [{"toolSpec": {"name": "lookup", "description": ATTACK,
                                                          "inputSchema": {"json": {"type": "object"}}}}]}},
                 "toolConfig.tools[0].toolSpec.description", id="tool-description"),
])
def test_injection_is_blocked_with_validation_exception(make_gateway, provider, fields, where):
    gateway = make_gateway(routes=ROUTES)
    request = {"modelId": MODEL, "messages": [{"role": "user", "content": [{"text": "hi"}]}], **fields}
    with pytest.raises(ClientError) as caught:
        client(gateway).converse(**request)
    error = caught.value.response
    assert error["Error"]["Code"] == "ValidationException"
    assert where in error["Error"]["Message"] and error["ResponseMetadata"]["RequestId"] in error["Error"]["Message"]
    assert provider.log == []


@pytest.mark.parametrize("call", [
    pytest.param(lambda c: c.converse_stream(modelId=MODEL, messages=[{"role": "user", "content": [{"text": ATTACK}]}]),
                 id="converse-stream"),
    pytest.param(lambda c: c.invoke_model(modelId=CLAUDE, contentType="application/json", body=json.dumps({
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 5,
        "messages": [{"role": "user", "content": ATTACK}]})),
        id="invoke-model-claude"),
    pytest.param(lambda c: c.invoke_model_with_response_stream(modelId=CLAUDE, contentType="application/json",
                                                               body=json.dumps({
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "system": ATTACK,
        "messages": [{"role": "user", "content": "hi"}]})), id="invoke-stream-claude"),
])
def test_injection_in_streams_and_invoke_model_is_blocked(make_gateway, provider, call):
    gateway = make_gateway(routes=ROUTES)
    with pytest.raises(ClientError) as caught:
        call(client(gateway))
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert provider.log == []


def test_without_gateway_credentials_nothing_is_forwarded(make_gateway, provider, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    CREDENTIALS.forget()
    gateway = make_gateway(routes=ROUTES)
    with pytest.raises(ClientError) as caught:
        client(gateway).converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert caught.value.response["Error"]["Code"] == "InternalServerException"
    assert "AWS credentials" in caught.value.response["Error"]["Message"]
    assert provider.log == []


def test_the_signing_region_is_the_route_setting_or_else_the_one_in_the_upstream_host():
    assert signing_region("", "https://bedrock-runtime.eu-west-3.amazonaws.com/model/m/converse") == "eu-west-3"
    assert signing_region("us-west-2", "https://bedrock-runtime.eu-west-3.amazonaws.com/model/m/converse") == \
        "us-west-2"


def test_a_route_without_a_region_to_sign_for_stops_start_up(make_gateway, monkeypatch, tmp_path):
    """Checked when the route is loaded, not on the first request: the fake host's name names no region, and the
    AWS SDK's own settings (AWS_REGION, the profile) name none either."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    with pytest.raises(ConfigError, match=r"\[route:bedrock\] names no AWS region.*`region`"):
        make_gateway(routes={"bedrock": ""})


def test_the_aws_sdks_own_region_is_used_when_the_route_names_none(make_gateway, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    gateway = make_gateway(routes={"bedrock": ""})
    assert {route.name: route.options for route in gateway.settings.routes}["bedrock"] == {"region": "eu-central-1"}


def test_a_bedrock_client_is_one_identity_whatever_it_signs():
    """The SigV4 header changes with every request; the access key id in it does not."""
    fmt = FORMATS["bedrock"]
    first = {"HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=AKIDCLIENT0000001/20250101/us-east-1/bedrock/"
                                   "aws4_request, SignedHeaders=host, Signature=aaaa"}
    second = {"HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=AKIDCLIENT0000001/20250102/us-east-1/bedrock/"
                                    "aws4_request, SignedHeaders=host;x-amz-date, Signature=bbbb"}
    assert fmt.client_key(first) == fmt.client_key(second) == "aws:AKIDCLIENT0000001"


def test_region_setting_must_be_an_aws_region(make_gateway):
    with pytest.raises(ConfigError, match=r"\[route:bedrock\] region must be an AWS region"):
        make_gateway(routes={"bedrock": "region = narnia"})
