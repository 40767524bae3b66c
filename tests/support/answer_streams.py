"""Fake providers' answers, one `Wire` per answer format: a plain answer holding a text, and a stream that sends
each of several texts in its own delta event between the format's opening and closing events, framed as the
provider frames it. The output-guard tests drive every format through the same table."""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Wire:
    name: str
    route: str  # the gateway's format, and the test route's name
    path: str  # the provider's path (below the route's prefix)
    plain: Callable[[str], dict]
    events: Callable[[list[str]], list[bytes]]  # the whole stream, one byte string per event
    request: dict  # a request the gateway relays to `path`; streamed with "stream": true where the body says so
    content_type: str = "text/event-stream"
    route_keys: str = ""  # the test route's own keys
    stream_path: str = ""  # where the provider streams, when not at `path`
    stream_query: str = ""  # what a client adds to the query string to stream

    def stream_request(self) -> dict:
        return {**self.request, "stream": True} if not self.stream_path else self.request


def filler(chars: int) -> str:
    """Harmless text of exactly `chars` characters, for one event of a long benchmark answer."""
    return ("lorem ipsum dolor sit amet " * (chars // 10 + 1))[:chars]


def sse(name: str | None, data: dict) -> bytes:
    return ((f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n").encode()


# --- OpenAI chat completions ----------------------------------------------------------------------------------

def chat_chunk(delta: dict) -> bytes:
    return sse(None, {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                      "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})


def chat_plain(text: str) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def chat_events(texts: list[str]) -> list[bytes]:
    return [chat_chunk({"role": "assistant", "content": ""}), *(chat_chunk({"content": text}) for text in texts),
            b"data: [DONE]\n\n"]


# --- OpenAI Responses -----------------------------------------------------------------------------------------

def _message(text: str, status: str = "completed") -> dict:
    return {"type": "message", "id": "msg_" + "0" * 32, "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": []}] if text or status == "completed"
            else []}


def responses_plain(text: str, output: list | None = None) -> dict:
    return {"id": "resp_1", "object": "response", "created_at": 1, "model": "gpt-test", "status": "completed",
            "output": output if output is not None else [_message(text)], "parallel_tool_calls": True,
            "tool_choice": "auto", "tools": [], "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}}


def responses_events(texts: list[str]) -> list[bytes]:
    whole = "".join(texts)
    events = [
        ("response.created", {"response": {**responses_plain("", []), "status": "in_progress"}}),
        ("response.output_item.added", {"output_index": 0, "item": _message("", "in_progress")}),
        ("response.content_part.added", {"output_index": 0, "content_index": 0, "item_id": "msg_1",
                                         "part": {"type": "output_text", "text": "", "annotations": []}}),
        *(("response.output_text.delta", {"output_index": 0, "content_index": 0, "item_id": "msg_1", "delta": text,
                                          "logprobs": []}) for text in texts),
        ("response.output_text.done", {"output_index": 0, "content_index": 0, "item_id": "msg_1", "text": whole,
                                       "logprobs": []}),
        ("response.content_part.done", {"output_index": 0, "content_index": 0, "item_id": "msg_1",
                                        "part": {"type": "output_text", "text": whole, "annotations": []}}),
        ("response.output_item.done", {"output_index": 0, "item": _message(whole)}),
        ("response.completed", {"response": responses_plain(whole)}),
    ]
    return [sse(name, {"type": name, "sequence_number": number, **data})
            for number, (name, data) in enumerate(events)]


# --- Anthropic messages ---------------------------------------------------------------------------------------

ANTHROPIC_MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
                     "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn",
                     "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}


def anthropic_plain(text: str) -> dict:
    return {**ANTHROPIC_MESSAGE, "content": [{"type": "text", "text": text}]}


def anthropic_events(texts: list[str]) -> list[bytes]:
    events = [("message_start", {"type": "message_start", "message": {**ANTHROPIC_MESSAGE, "content": []}}),
              ("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}})]
    events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": text}}) for text in texts]
    events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                  "usage": {"output_tokens": 3}}),
               ("message_stop", {"type": "message_stop"})]
    return [sse(name, data) for name, data in events]


# --- Gemini ---------------------------------------------------------------------------------------------------

GEMINI_MODEL = "gemini-test"


def gemini_plain(text: str) -> dict:
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP",
                            "index": 0}],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2},
            "modelVersion": GEMINI_MODEL}


def _gemini_chunks(texts: list[str]) -> list[dict]:
    chunks = [{"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}]}
              for text in texts]
    return chunks + [{**gemini_plain(""), "candidates": [{"content": {"role": "model", "parts": [{"text": ""}]},
                                                          "finishReason": "STOP", "index": 0}]}]


def gemini_sse_events(texts: list[str]) -> list[bytes]:
    return [f"data: {json.dumps(chunk)}\r\n\r\n".encode() for chunk in _gemini_chunks(texts)]


def gemini_array_events(texts: list[str]) -> list[bytes]:
    """The JSON array without alt=sse, written as the API writes it: `[{...}`, then `,\r\n{...}`, then `]`."""
    chunks = [json.dumps(chunk, indent=2).encode() for chunk in _gemini_chunks(texts)]
    return [b"[" + chunks[0]] + [b",\r\n" + chunk for chunk in chunks[1:]] + [b"\n]"]


# --- Cohere ---------------------------------------------------------------------------------------------------

def cohere_v2_plain(text: str) -> dict:
    return {"id": "r1", "finish_reason": "COMPLETE", "usage": {},
            "message": {"role": "assistant", "content": [{"type": "text", "text": text}]}}


def cohere_v2_events(texts: list[str]) -> list[bytes]:
    events = [{"type": "message-start", "id": "r1", "delta": {"message": {"role": "assistant"}}},
              {"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}},
              *({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": text}}}}
                for text in texts),
              {"type": "content-end", "index": 0},
              {"type": "message-end", "delta": {"finish_reason": "COMPLETE"}}]
    return [sse(event["type"], event) for event in events]


def cohere_v1_plain(text: str) -> dict:
    return {"text": text, "generation_id": "g1", "finish_reason": "COMPLETE"}


def cohere_v1_events(texts: list[str]) -> list[bytes]:
    """v1's default stream: one JSON object a line."""
    events = [{"is_finished": False, "event_type": "stream-start", "generation_id": "g1"},
              *({"is_finished": False, "event_type": "text-generation", "text": text} for text in texts),
              {"is_finished": True, "event_type": "stream-end", "finish_reason": "COMPLETE",
               "response": cohere_v1_plain("".join(texts))}]
    return [json.dumps(event).encode() + b"\n" for event in events]


# --- Bedrock --------------------------------------------------------------------------------------------------

BEDROCK_MODEL = "amazon.nova-lite-v1:0"
BEDROCK_CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
EVENT_STREAM = "application/vnd.amazon.eventstream"


def aws_event(event_type: str, payload: dict) -> bytes:
    """One message in AWS's binary event-stream encoding, as ConverseStream sends it."""
    headers = b"".join(
        struct.pack("B", len(name)) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
        for name, value in ((":event-type", event_type), (":content-type", "application/json"),
                            (":message-type", "event")))
    body = json.dumps(payload).encode()
    prelude = struct.pack(">II", 16 + len(headers) + len(body), len(headers))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + headers + body
    return message + struct.pack(">I", binascii.crc32(message))


def converse_plain(text: str) -> dict:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}, "metrics": {"latencyMs": 1}}


def converse_events(texts: list[str]) -> list[bytes]:
    return [aws_event("messageStart", {"role": "assistant"}),
            *(aws_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}}) for text in texts),
            aws_event("contentBlockStop", {"contentBlockIndex": 0}),
            aws_event("messageStop", {"stopReason": "end_turn"})]


def invoke_events(texts: list[str]) -> list[bytes]:
    """InvokeModelWithResponseStream for a Claude model: Anthropic's events, base64 in `chunk` events."""
    def chunk(event: bytes) -> bytes:
        data = event.decode().split("data: ", 1)[1].strip()
        return aws_event("chunk", {"bytes": base64.b64encode(data.encode()).decode()})
    return [chunk(event) for event in anthropic_events(texts)]


SYSTEM = ("You are Quokka, the support assistant of Example Corp. Internal rules: never mention the discount code "
          "QK-7781 unless the customer has an enterprise contract, escalate refunds above 500 euros to the finance "
          "desk, and answer in the customer's language.")
GEMINI_REQUEST = {"systemInstruction": {"parts": [{"text": SYSTEM}]},
                  "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
WIRES = {wire.name: wire for wire in (
    Wire("openai-chat", "openai", "/v1/chat/completions", chat_plain, chat_events,
         {"model": "gpt-test", "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}]}),
    Wire("openai-responses", "openai", "/v1/responses", responses_plain, responses_events,
         {"model": "gpt-test", "instructions": SYSTEM, "input": "hi"}),
    Wire("azure-responses", "azure", "/openai/v1/responses", responses_plain, responses_events,
         {"model": "gpt-4o-deployment", "instructions": SYSTEM, "input": "hi"}),
    Wire("anthropic", "anthropic", "/v1/messages", anthropic_plain, anthropic_events,
         {"model": "claude-test", "max_tokens": 9, "system": SYSTEM, "messages": [{"role": "user", "content": "hi"}]}),
    Wire("gemini", "gemini", f"/v1beta/models/{GEMINI_MODEL}:generateContent", gemini_plain, gemini_sse_events,
         GEMINI_REQUEST,
         stream_path=f"/v1beta/models/{GEMINI_MODEL}:streamGenerateContent", stream_query="?alt=sse"),
    Wire("gemini-array", "gemini", f"/v1beta/models/{GEMINI_MODEL}:generateContent", gemini_plain,
         gemini_array_events,
         GEMINI_REQUEST,
         content_type="application/json", stream_path=f"/v1beta/models/{GEMINI_MODEL}:streamGenerateContent"),
    Wire("cohere-v2", "cohere", "/v2/chat", cohere_v2_plain, cohere_v2_events,
         {"model": "command-a", "messages": [{"role": "system", "content": SYSTEM},
                                             {"role": "user", "content": "hi"}]}),
    Wire("cohere-v1", "cohere", "/v1/chat", cohere_v1_plain, cohere_v1_events,
         {"model": "command-r", "preamble": SYSTEM, "message": "hi"}, content_type="application/stream+json"),
    Wire("bedrock-converse", "bedrock", f"/model/{BEDROCK_MODEL}/converse", converse_plain, converse_events,
         {"system": [{"text": SYSTEM}], "messages": [{"role": "user", "content": [{"text": "hi"}]}]},
         content_type=EVENT_STREAM, route_keys="region = us-east-1",
         stream_path=f"/model/{BEDROCK_MODEL}/converse-stream"),
    Wire("bedrock-invoke", "bedrock", f"/model/{BEDROCK_CLAUDE}/invoke", anthropic_plain, invoke_events,
         {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 9, "system": SYSTEM,
          "messages": [{"role": "user", "content": "hi"}]},
         content_type=EVENT_STREAM, route_keys="region = us-east-1",
         stream_path=f"/model/{BEDROCK_CLAUDE}/invoke-with-response-stream"),
)}
