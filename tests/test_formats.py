"""Each wire format, field by field: the text at every path the model reads is collected with that path, unknown
shapes are refused, and errors come out in the provider's own shape."""

from __future__ import annotations

import base64

import json

import pytest

from lockllm_wsgi.extract import UnknownShape
from lockllm_wsgi.formats import FORMATS
from lockllm_wsgi.refusal import Refusal

T = "INJECTED TEXT"
# A PNG signature and bytes no text holds.
IMG = {"type": "base64", "media_type": "image/png",
       "data": base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256))).decode()}
# The first bytes of a real PDF: its second line is a comment of high bytes, so it is not text.
PDF = base64.b64encode(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n").decode()


def collected(fmt: str, path: str, body: dict) -> dict[str, tuple[str, str | None]]:
    """where -> (text, role) of every segment the format collected."""
    return {s.where: (s.text, s.role) for s in FORMATS[fmt].extract(path, body).segments}


def anthropic(*messages, **top) -> dict:
    return {"model": "claude", "max_tokens": 10, "messages": list(messages) or [{"role": "user", "content": "hi"}],
            **top}


def user(*blocks) -> dict:
    return {"role": "user", "content": list(blocks)}


GEN = "/v1beta/models/gemini-test:generateContent"


def gemini(*parts, **top) -> dict:
    return {"contents": [{"role": "user", "parts": list(parts) or [{"text": "hi"}]}], **top}


CONVERSE = "/model/amazon.nova-lite-v1:0/converse"


def converse(*blocks, **top) -> dict:
    return {"messages": [{"role": "user", "content": list(blocks) or [{"text": "hi"}]}], **top}


FIELD_PATHS = [
    # --- anthropic -----------------------------------------------------------------------------------------
    pytest.param("anthropic", "/v1/messages", anthropic(system=T), "system", "system", id="anthropic-system-string"),
    pytest.param("anthropic", "/v1/messages", anthropic(system=[{"type": "text", "text": T}]), "system[0].text",
                 "system", id="anthropic-system-blocks"),
    pytest.param("anthropic", "/v1/messages", anthropic({"role": "user", "content": T}), "messages[0].content",
                 "user", id="anthropic-content-string"),
    pytest.param("anthropic", "/v1/messages", anthropic(user({"type": "text", "text": T})),
                 "messages[0].content[0].text", "user", id="anthropic-text-block"),
    pytest.param("anthropic", "/v1/messages/count_tokens",
                 {"model": "c", "messages": [user({"type": "text", "text": T})]},
                 "messages[0].content[0].text", "user", id="anthropic-count-tokens"),
    pytest.param("anthropic", "/v1/messages", anthropic(
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"q": T}}]}),
        "messages[0].content[0].input.q", "assistant", id="anthropic-tool-use-input"),
    pytest.param("anthropic", "/v1/messages", anthropic(
        user({"type": "tool_result", "tool_use_id": "t1", "content": T})),
        "messages[0].content[0].content", "tool", id="anthropic-tool-result-string"),
    pytest.param("anthropic", "/v1/messages", anthropic(
        user({"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "ok"},
                                                                       {"type": "text", "text": T}]})),
        "messages[0].content[0].content[1].text", "tool", id="anthropic-tool-result-blocks"),
    pytest.param("anthropic", "/v1/messages", anthropic(
        {"role": "assistant", "content": [{"type": "thinking", "thinking": T, "signature": "sig"}]}),
        "messages[0].content[0].thinking", "assistant", id="anthropic-thinking"),
    pytest.param("anthropic", "/v1/messages", anthropic(user(
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": T}})),
        "messages[0].content[0].source.data", "user", id="anthropic-text-document"),
    pytest.param("anthropic", "/v1/messages", anthropic(user(
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": T}]}})),
        "messages[0].content[0].source.content[0].text", "user", id="anthropic-content-document"),
    pytest.param("anthropic", "/v1/messages", anthropic(user(
        {"type": "document", "title": T, "source": {"type": "url", "url": "https://x/y.pdf"}})),
        "messages[0].content[0].title", "user", id="anthropic-document-title"),
    pytest.param("anthropic", "/v1/messages", anthropic(user(
        {"type": "search_result", "source": "https://x", "title": "t", "content": [{"type": "text", "text": T}]})),
        "messages[0].content[0].content[0].text", "user", id="anthropic-search-result"),
    pytest.param("anthropic", "/v1/messages", anthropic(tools=[{"name": "f", "description": T, "input_schema": {}}]),
                 "tools[0].description", "tools", id="anthropic-tool-description"),
    pytest.param("anthropic", "/v1/messages", anthropic(tools=[{"name": "f", "input_schema": {
        "type": "object", "properties": {"q": {"type": "string", "description": T}}}}]),
        "tools[0].input_schema.properties.q.description", "tools", id="anthropic-tool-schema"),
    pytest.param("anthropic", "/v1/messages", {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5,
                                               "messages": [{"role": "user", "content": T}]},
                 "messages[0].content", "user", id="anthropic-bedrock-invoke-body"),
    # --- gemini --------------------------------------------------------------------------------------------
    pytest.param("gemini", GEN, gemini({"text": T}), "contents[0].parts[0].text", "user", id="gemini-text"),
    pytest.param("gemini", "/v1/models/g:streamGenerateContent", gemini({"text": T}), "contents[0].parts[0].text",
                 "user", id="gemini-v1-stream"),
    pytest.param("gemini", GEN, {"contents": [{"role": "model", "parts": [{"text": T}]}]},
                 "contents[0].parts[0].text", "model", id="gemini-model-turn"),
    pytest.param("gemini", GEN, gemini(systemInstruction={"parts": [{"text": T}]}), "systemInstruction.parts[0].text",
                 "system", id="gemini-system-instruction"),
    pytest.param("gemini", GEN, gemini(system_instruction={"parts": [{"text": T}]}),
                 "systemInstruction.parts[0].text", "system", id="gemini-system-instruction-snake-case"),
    pytest.param("gemini", GEN, gemini({"functionCall": {"name": "f", "args": {"q": T}}}),
                 "contents[0].parts[0].functionCall.args.q", "user", id="gemini-function-call-args"),
    pytest.param("gemini", GEN, gemini({"functionResponse": {"name": "f", "response": {"out": [T]}}}),
                 "contents[0].parts[0].functionResponse.response.out[0]", "tool", id="gemini-function-response"),
    pytest.param("gemini", GEN, gemini({"function_response": {"name": "f", "response": {"out": T}}}),
                 "contents[0].parts[0].functionResponse.response.out", "tool", id="gemini-function-response-snake"),
    pytest.param("gemini", GEN, gemini({"executableCode": {"language": "PYTHON", "code": T}}),
                 "contents[0].parts[0].executableCode.code", "user", id="gemini-executable-code"),
    pytest.param("gemini", GEN, gemini({"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": T}}),
                 "contents[0].parts[0].codeExecutionResult.output", "tool", id="gemini-code-output"),
    pytest.param("gemini", GEN, gemini({"text": T, "thought": True, "thoughtSignature": "c2ln"}),
                 "contents[0].parts[0].text", "user", id="gemini-thought"),
    pytest.param("gemini", GEN, gemini(tools=[{"functionDeclarations": [{"name": "f", "description": T}]}]),
                 "tools[0].functionDeclarations[0].description", "tools", id="gemini-function-description"),
    pytest.param("gemini", GEN, gemini(generationConfig={"responseSchema": {"type": "OBJECT", "description": T}}),
                 "generationConfig.responseSchema.description", "response_format", id="gemini-response-schema"),
    pytest.param("gemini", "/v1beta/models/g:countTokens", gemini({"text": T}), "contents[0].parts[0].text", "user",
                 id="gemini-count-tokens"),
    pytest.param("gemini", "/v1beta/models/g:countTokens", {"generateContentRequest": {
        "model": "models/g", **gemini({"text": T})}}, "generateContentRequest.contents[0].parts[0].text", "user",
        id="gemini-count-tokens-nested"),
    pytest.param("gemini", "/v1beta/models/g:embedContent", {"content": {"parts": [{"text": T}]}},
                 "content.parts[0].text", "user", id="gemini-embed"),
    pytest.param("gemini", "/v1beta/models/g:batchEmbedContents", {"requests": [
        {"model": "models/g", "content": {"parts": [{"text": T}]}}]}, "requests[0].content.parts[0].text", "user",
        id="gemini-batch-embed"),
    pytest.param("gemini", "/v1beta/cachedContents", {"model": "models/g", "ttl": "60s", **gemini({"text": T})},
                 "contents[0].parts[0].text", "user", id="gemini-cached-content"),
    # --- azure ---------------------------------------------------------------------------------------------
    pytest.param("azure", "/openai/deployments/gpt-4o/chat/completions", {"messages": [{"role": "user", "content": T}]},
                 "messages[0].content", "user", id="azure-deployment-chat"),
    pytest.param("azure", "/openai/deployments/gpt-4o/completions", {"prompt": T}, "prompt", "user",
                 id="azure-deployment-completions"),
    pytest.param("azure", "/openai/deployments/embed/embeddings", {"input": [T]}, "input[0]", "user",
                 id="azure-deployment-embeddings"),
    pytest.param("azure", "/openai/v1/chat/completions", {"model": "gpt-4o", "messages": [
        {"role": "system", "content": T}]}, "messages[0].content", "system", id="azure-v1-chat"),
    pytest.param("azure", "/openai/v1/responses", {"model": "gpt-4o", "instructions": T}, "instructions", "system",
                 id="azure-v1-responses"),
    # --- bedrock -------------------------------------------------------------------------------------------
    pytest.param("bedrock", CONVERSE, converse({"text": T}), "messages[0].content[0].text", "user",
                 id="bedrock-text"),
    pytest.param("bedrock", "/model/m/converse-stream", converse({"text": T}), "messages[0].content[0].text", "user",
                 id="bedrock-converse-stream"),
    pytest.param("bedrock", CONVERSE, converse(system=[{"text": T}]), "system[0].text", "system",
                 id="bedrock-system"),
    pytest.param("bedrock", CONVERSE, converse(system=[{"guardContent": {"text": {"text": T}}}]),
                 "system[0].guardContent.text.text", "system", id="bedrock-system-guard-content"),
    pytest.param("bedrock", CONVERSE, {"messages": [{"role": "assistant", "content": [
        {"toolUse": {"toolUseId": "t", "name": "f", "input": {"q": T}}}]}]},
        "messages[0].content[0].toolUse.input.q", "assistant", id="bedrock-tool-use-input"),
    pytest.param("bedrock", CONVERSE, converse({"toolResult": {"toolUseId": "t", "content": [{"text": T}]}}),
                 "messages[0].content[0].toolResult.content[0].text", "tool", id="bedrock-tool-result-text"),
    pytest.param("bedrock", CONVERSE, converse({"toolResult": {"toolUseId": "t", "content": [{"json": {"r": T}}]}}),
                 "messages[0].content[0].toolResult.content[0].json.r", "tool", id="bedrock-tool-result-json"),
    pytest.param("bedrock", CONVERSE, converse({"document": {"name": "d", "format": "txt", "source": {"text": T}}}),
                 "messages[0].content[0].document.source.text", "user", id="bedrock-text-document"),
    pytest.param("bedrock", CONVERSE, converse({"document": {"name": T, "format": "pdf", "source": {"bytes": "JV"}}}),
                 "messages[0].content[0].document.name", "user", id="bedrock-document-name"),
    pytest.param("bedrock", CONVERSE, {"messages": [{"role": "assistant", "content": [
        {"reasoningContent": {"reasoningText": {"text": T, "signature": "s"}}}]}]},
        "messages[0].content[0].reasoningContent.reasoningText.text", "assistant", id="bedrock-reasoning"),
    pytest.param("bedrock", CONVERSE, converse({"searchResult": {"source": "s", "title": "t", "content": [
        {"text": T}]}}), "messages[0].content[0].searchResult.content[0].text", "user", id="bedrock-search-result"),
    pytest.param("bedrock", CONVERSE, converse(toolConfig={"tools": [{"toolSpec": {
        "name": "f", "description": T, "inputSchema": {"json": {}}}}]}),
        "toolConfig.tools[0].toolSpec.description", "tools", id="bedrock-tool-description"),
    pytest.param("bedrock", CONVERSE, converse(promptVariables={"topic": {"text": T}}), "promptVariables.topic.text",
                 "user", id="bedrock-prompt-variables"),
    pytest.param("bedrock", CONVERSE, converse(additionalModelRequestFields={"system": T}),
                 "additionalModelRequestFields.system", "model_fields", id="bedrock-additional-model-fields"),
    pytest.param("bedrock", "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke", {
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "system": T,
        "messages": [{"role": "user", "content": "hi"}]}, "system", "system", id="bedrock-invoke-anthropic"),
    pytest.param("bedrock", "/model/us.anthropic.claude-3-5-haiku-20241022-v1:0/invoke-with-response-stream", {
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 5,
        "messages": [{"role": "user", "content": [{"type": "text", "text": T}]}]},
        "messages[0].content[0].text", "user", id="bedrock-invoke-stream-inference-profile"),
    # --- cohere --------------------------------------------------------------------------------------------
    pytest.param("cohere", "/v1/chat", {"message": T}, "message", "user", id="cohere-v1-message"),
    pytest.param("cohere", "/v1/chat", {"message": "hi", "preamble": T}, "preamble", "system",
                 id="cohere-v1-preamble"),
    pytest.param("cohere", "/v1/chat", {"message": "hi", "chat_history": [{"role": "CHATBOT", "message": T}]},
                 "chat_history[0].message", "assistant", id="cohere-v1-history"),
    pytest.param("cohere", "/v1/chat", {"message": "hi", "chat_history": [{"role": "TOOL", "tool_results": [
        {"call": {"name": "f", "parameters": {}}, "outputs": [{"r": T}]}]}]},
        "chat_history[0].tool_results[0].outputs[0].r", "tool", id="cohere-v1-history-tool-results"),
    pytest.param("cohere", "/v1/chat", {"message": "hi", "documents": [{"title": "t", "snippet": T}]},
                 "documents[0].snippet", "document", id="cohere-v1-documents"),
    pytest.param("cohere", "/v1/chat", {"message": "", "tool_results": [
        {"call": {"name": "f", "parameters": {"q": "x"}}, "outputs": [{"answer": T}]}]},
        "tool_results[0].outputs[0].answer", "tool", id="cohere-v1-tool-results"),
    pytest.param("cohere", "/v1/chat", {"message": "hi", "tools": [{"name": "f", "description": T}]},
                 "tools[0].description", "tools", id="cohere-v1-tools"),
    pytest.param("cohere", "/v2/chat", {"messages": [{"role": "user", "content": T}]}, "messages[0].content", "user",
                 id="cohere-v2-content-string"),
    pytest.param("cohere", "/v2/chat", {"messages": [{"role": "system", "content": [{"type": "text", "text": T}]}]},
                 "messages[0].content[0].text", "system", id="cohere-v2-content-parts"),
    pytest.param("cohere", "/v2/chat", {"messages": [{"role": "assistant", "tool_plan": T, "tool_calls": []}]},
                 "messages[0].tool_plan", "assistant", id="cohere-v2-tool-plan"),
    pytest.param("cohere", "/v2/chat", {"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": T}}]}]},
        "messages[0].tool_calls[0].function.arguments", "assistant", id="cohere-v2-tool-call-arguments"),
    pytest.param("cohere", "/v2/chat", {"messages": [{"role": "tool", "tool_call_id": "c", "content": [
        {"type": "document", "document": {"data": {"out": T}}}]}]},
        "messages[0].content[0].document.data.out", "tool", id="cohere-v2-tool-document"),
    pytest.param("cohere", "/v2/chat", {"messages": [{"role": "user", "content": "hi"}], "documents": [T]},
                 "documents[0]", "document", id="cohere-v2-documents"),
    pytest.param("cohere", "/v2/chat", {"messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "function", "function": {"name": "f", "description": T}}]}, "tools[0].function.description",
        "tools", id="cohere-v2-tools"),
    pytest.param("cohere", "/v2/embed", {"texts": ["ok", T]}, "texts[1]", "user", id="cohere-embed-texts"),
    pytest.param("cohere", "/v2/embed", {"inputs": [{"content": [{"type": "text", "text": T}]}]},
                 "inputs[0].content[0].text", "user", id="cohere-embed-inputs"),
    pytest.param("cohere", "/v2/rerank", {"query": T, "documents": ["a"]}, "query", "user", id="cohere-rerank-query"),
    pytest.param("cohere", "/v1/rerank", {"query": "q", "documents": [{"text": T}]}, "documents[0].text", "document",
                 id="cohere-rerank-documents"),
]


@pytest.mark.parametrize("fmt, path, body, where, role", FIELD_PATHS)
def test_text_at_every_field_path_is_collected_with_its_where(fmt, path, body, where, role):
    assert collected(fmt, path, body)[where] == (T, role)


BINARY_PARTS = [
    pytest.param("anthropic", "/v1/messages", anthropic(user({"type": "image", "source": IMG})),
                 "messages[0].content[0].source.data", id="anthropic-image"),
    pytest.param("anthropic", "/v1/messages", anthropic(user(
        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": IMG}]})),
        "messages[0].content[0].content[0].source.data", id="anthropic-image-in-tool-result"),
    pytest.param("bedrock", CONVERSE, converse({"image": {"format": "png", "source": {"bytes": "iVBO"}}}),
                 "messages[0].content[0].image.source.bytes", id="bedrock-image"),
    pytest.param("bedrock", CONVERSE, converse({"document": {"name": "d", "format": "pdf", "source": {"bytes": PDF}}}),
                 "messages[0].content[0].document.source.bytes", id="bedrock-pdf"),
    pytest.param("cohere", "/v2/chat", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]}]},
        "messages[0].content[0].image_url.url", id="cohere-v2-image"),
    pytest.param("anthropic", "/v1/messages", anthropic(user(
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}})),
        "messages[0].content[0].source.data", id="anthropic-pdf"),
    pytest.param("gemini", GEN, gemini({"inlineData": {"mimeType": "image/png", "data": "iVBO"}}),
                 "contents[0].parts[0].inlineData.data", id="gemini-inline-data"),
    pytest.param("gemini", GEN, gemini({"file_data": {"file_uri": "gs://b/f.pdf"}}),
                 "contents[0].parts[0].fileData", id="gemini-file-data"),
]


@pytest.mark.parametrize("fmt, path, body, where", BINARY_PARTS)
def test_non_text_parts_are_recorded_as_unscannable(fmt, path, body, where):
    assert where in FORMATS[fmt].extract(path, body).non_text


UNKNOWN_SHAPES = [
    pytest.param("anthropic", "/v1/messages", anthropic(user({"type": "hologram", "text": T})),
                 "messages[0].content[0].type", id="anthropic-unknown-block"),
    pytest.param("anthropic", "/v1/messages", anthropic(mcp_servers=[{"url": "https://x", "name": "m"}]),
                 "mcp_servers", id="anthropic-mcp-servers"),
    pytest.param("anthropic", "/v1/messages", anthropic({"role": "user", "content": "hi", "extra": T}),
                 "messages[0].extra", id="anthropic-unknown-message-key"),
    pytest.param("anthropic", "/v1/messages", anthropic(user({"type": "tool_use", "name": "f", "input": {}},
                                                             {"type": "text", "text": 5})),
                 "messages[0].content[1].text", id="anthropic-text-not-a-string"),
    pytest.param("anthropic", "/v1/complete", {"prompt": T}, "path", id="anthropic-legacy-complete"),
    pytest.param("gemini", GEN, gemini(systemInstruction={"parts": [{"text": "be nice"}]},
                                       system_instruction={"parts": [{"text": T}]}),
                 "system_instruction", id="gemini-field-spelt-both-ways"),
    pytest.param("gemini", GEN, gemini({"text": "hi", "inlineData": {"data": "x"}}), "contents[0].parts[0]",
                 id="gemini-part-with-two-kinds"),
    pytest.param("gemini", GEN, gemini({"hologram": T}), "contents[0].parts[0].hologram", id="gemini-unknown-part"),
    pytest.param("gemini", GEN, gemini(prompt=T), "prompt", id="gemini-unknown-top-level"),
    pytest.param("gemini", "/v1beta/models/g:predict", {"instances": [T]}, "path", id="gemini-unknown-endpoint"),
    pytest.param("azure", "/openai/deployments/gpt-4o/chat/completions", {
        "messages": [{"role": "user", "content": "hi"}],
        "data_sources": [{"type": "azure_search", "parameters": {"role_information": T}}]}, "data_sources",
        id="azure-on-your-data"),
    pytest.param("azure", "/openai/deployments/dall-e/images/generations", {"prompt": T}, "path",
                 id="azure-unknown-endpoint"),
    pytest.param("azure", "/v1/chat/completions", {"messages": [{"role": "user", "content": T}]}, "path",
                 id="azure-openai-path-without-azure-prefix"),
    pytest.param("bedrock", CONVERSE, converse({"hologram": T}), "messages[0].content[0]", id="bedrock-unknown-block"),
    pytest.param("bedrock", CONVERSE, converse({"text": "a", "image": {}}), "messages[0].content[0]",
                 id="bedrock-block-with-two-kinds"),
    pytest.param("bedrock", CONVERSE, converse(prompt=T), "prompt", id="bedrock-unknown-top-level"),
    pytest.param("bedrock", "/model/meta.llama3-70b-instruct-v1:0/invoke", {"prompt": T}, "path",
                 id="bedrock-invoke-non-anthropic"),
    pytest.param("cohere", "/v1/chat", {"message": "hi", "chat_history": [{"role": "ROBOT", "message": T}]},
                 "chat_history[0].role", id="cohere-v1-unknown-role"),
    pytest.param("cohere", "/v2/chat", {"messages": [{"role": "user", "content": [{"type": "audio", "x": T}]}]},
                 "messages[0].content[0].type", id="cohere-v2-unknown-part"),
    pytest.param("cohere", "/v2/chat", {"messages": [], "preamble": T}, "preamble", id="cohere-v1-key-on-v2"),
    pytest.param("cohere", "/v1/generate", {"prompt": T}, "path", id="cohere-legacy-generate"),
]


@pytest.mark.parametrize("fmt, path, body, where", UNKNOWN_SHAPES)
def test_unknown_shapes_are_refused_naming_the_field(fmt, path, body, where):
    with pytest.raises(UnknownShape) as caught:
        FORMATS[fmt].extract(path, body)
    assert caught.value.where == where


BLOCKED = Refusal(400, "prompt_injection_detected", "The request was blocked.")
UNAVAILABLE = Refusal(503, "scanner_unavailable", "The scanner is unavailable.")

ERROR_SHAPES = [
    pytest.param("anthropic", BLOCKED, {"type": "error", "request_id": "req_1", "error": {
        "type": "invalid_request_error", "message": "The request was blocked. (request id req_1)",
        "details": {"error_code": "prompt_injection_detected"}}}, id="anthropic-400"),
    pytest.param("anthropic", UNAVAILABLE, {"type": "error", "request_id": "req_1", "error": {
        "type": "api_error", "message": "The scanner is unavailable. (request id req_1)",
        "details": {"error_code": "scanner_unavailable"}}}, id="anthropic-503"),
    pytest.param("anthropic", Refusal(529, "overloaded", "Busy."), {"type": "error", "request_id": "req_1", "error": {
        "type": "overloaded_error", "message": "Busy. (request id req_1)", "details": {"error_code": "overloaded"}}},
        id="anthropic-529"),
    pytest.param("azure", BLOCKED, {"error": {
        "message": "The request was blocked. (request id req_1)", "type": "invalid_request_error", "param": None,
        "code": "prompt_injection_detected"}}, id="azure-400"),
    pytest.param("bedrock", BLOCKED, {"message": "The request was blocked. (request id req_1)"}, id="bedrock-400"),
    pytest.param("cohere", BLOCKED, {"id": "req_1", "message": "The request was blocked. (request id req_1)"},
                 id="cohere-400"),
    pytest.param("gemini", BLOCKED, {"error": {
        "code": 400, "status": "INVALID_ARGUMENT", "message": "The request was blocked. (request id req_1)",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "PROMPT_INJECTION_DETECTED",
                     "domain": "lockllm-wsgi", "metadata": {"request_id": "req_1"}}]}}, id="gemini-400"),
    pytest.param("gemini", UNAVAILABLE, {"error": {
        "code": 503, "status": "UNAVAILABLE", "message": "The scanner is unavailable. (request id req_1)",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SCANNER_UNAVAILABLE",
                     "domain": "lockllm-wsgi", "metadata": {"request_id": "req_1"}}]}}, id="gemini-503"),
]


@pytest.mark.parametrize("fmt, refusal, expected", ERROR_SHAPES)
def test_errors_take_the_provider_shape_with_the_request_id(fmt, refusal, expected):
    headers, body = FORMATS[fmt].error_body(refusal, "req_1")
    assert ("Content-Type", "application/json") in headers
    assert json.loads(body) == expected


@pytest.mark.parametrize("fmt, path, body, streams", [
    pytest.param("gemini", "/v1beta/models/g:streamGenerateContent", {}, True, id="gemini-stream-path"),
    pytest.param("gemini", GEN, {"stream": True}, False, id="gemini-generate-ignores-body-flag"),
    pytest.param("bedrock", "/model/m/converse-stream", {}, True, id="bedrock-converse-stream"),
    pytest.param("bedrock", "/model/m/invoke-with-response-stream", {}, True, id="bedrock-invoke-stream"),
    pytest.param("bedrock", CONVERSE, {}, False, id="bedrock-converse"),
])
def test_is_stream(fmt, path, body, streams):
    assert FORMATS[fmt].is_stream(path, body) is streams


@pytest.mark.parametrize("refusal, error_type", [
    pytest.param(BLOCKED, "ValidationException", id="blocked"),
    pytest.param(UNAVAILABLE, "ServiceUnavailableException", id="scanner-unavailable"),
    pytest.param(Refusal(413, "request_too_large", "Too big."), "ValidationException", id="too-large"),
])
def test_bedrock_errors_name_their_type_in_the_header_botocore_reads(refusal, error_type):
    headers, _ = FORMATS["bedrock"].error_body(refusal, "req_1")
    assert ("x-amzn-ErrorType", error_type) in headers and ("x-amzn-RequestId", "req_1") in headers
