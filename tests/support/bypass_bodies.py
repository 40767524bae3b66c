"""Request bodies of every format built from a list of carriers, each carrying one piece of text in one of the
places that format reads text from (messages, parts, tool-call arguments and results, files, documents, prompt
variables), and the transformations an attacker applies to the piece (invisible padding, tag characters, variation
selectors, full-width forms, JSON escapes, markup, file types that hide text). Used by the property test in
test_bypass_classes.py together with model_view.py."""

from __future__ import annotations

import base64
import json
from typing import Callable

from hypothesis import strategies as st

# Invisible characters of several Unicode families (zero-width, word joiner, Mongolian free variation selector,
# interlinear annotation, musical and shorthand format controls, Egyptian hieroglyph format control, Hangul
# filler, combining grapheme joiner, soft hyphen, Arabic letter mark) and blank-looking or plain whitespace.
INVISIBLES = ["\u200b", "\u2060", "\u180b", "\ufff9", "\U0001d173", "\U0001bca0", "\U00013430", "\u3164", "\u115f",
              "\u034f", "\u00ad", "\u061c", "\u200d", "\ufeff", "\U000e0001"]
BLANKS = [" ", "\n", "\t", "\u3000", "\u2003", "\u2800", "\u00a0"]


def tags(text: str) -> str:
    return "".join(chr(0xE0000 + ord(c)) if " " <= c <= "~" else c for c in text)


def full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def selector_run(text: str) -> str:
    """The text's bytes as a run of variation selectors after one emoji."""
    return "\U0001F600" + "".join(chr(0xFE00 + b) if b < 16 else chr(0xE0100 + b - 16) for b in text.encode())


def selector_spread(text: str) -> str:
    """One selector (one byte) after each letter of a cover text."""
    cover = "the quick brown fox jumps over the lazy dog " * 2
    return "".join(cover[i] + chr(0xE0100 + b - 16) for i, b in enumerate(text.encode())) + cover[len(text):]


@st.composite
def sprinkled(draw, text: str) -> str:
    """Invisible characters between the letters."""
    return "".join(c + draw(st.sampled_from(["", *INVISIBLES])) for c in text)


@st.composite
def disguised(draw, text: str) -> str:
    how = draw(st.sampled_from(["plain", "sprinkle", "tags", "full_width", "selector_run", "selector_spread"]))
    if how == "sprinkle":
        return draw(sprinkled(text))
    transform: dict[str, Callable[[str], str]] = {"tags": tags, "full_width": full_width, "selector_run": selector_run,
                                                  "selector_spread": selector_spread}
    return transform.get(how, str)(text)


@st.composite
def padding(draw) -> str:
    """Invisible or blank padding, up to far longer than the context window."""
    unit = draw(st.sampled_from(INVISIBLES + BLANKS))
    return unit * draw(st.sampled_from([0, 1, 40, 301, 2000]))


def html_entities(text: str) -> str:
    return "<p>" + "".join(f"&#{ord(c)};" for c in text) + "</p>"


def html_split(text: str) -> str:
    return "<div>" + "<b></b>".join(text) + "</div>"


def rtf(text: str) -> str:
    return "{\\rtf1\\ansi " + "".join(f"\\'{ord(c):02x}" for c in text) + "\\par}"


FILE_CONTENT = {"plain": str, "entities": html_entities, "tags_between": html_split, "rtf": rtf}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def escaped_json(text: str) -> str:
    """Tool arguments with every letter as a JSON \\u escape: the raw string shows no word of it."""
    return '{"q": "' + "".join(f"\\u{ord(c):04x}" if c.isalpha() else c for c in text) + '"}'


def arguments(text: str, escape: bool) -> str:
    return escaped_json(text) if escape else json.dumps({"q": text}, ensure_ascii=False)


# --- carriers per format: kind -> function(text, variant) -> a JSON fragment --------------------------------

def _openai_chat(kind: str, text: str, variant: int) -> dict:
    if kind == "message":
        return {"role": ("user", "system", "developer")[variant % 3], "content": text}
    if kind == "part":
        return {"role": "user", "content": [{"type": "text", "text": text}]}
    if kind == "tool_arguments":
        return {"role": "assistant", "tool_calls": [{"id": "call_" + "A1b2C3d4E5f6G7h8I9j0K1l2", "type": "function",
                                                     "function": {"name": "lookup",
                                                                  "arguments": arguments(text, variant % 2 == 0)}}]}
    if kind == "tool_result":
        return {"role": "tool", "tool_call_id": "call_A1b2C3d4E5f6G7h8I9j0K1l2", "content": text}
    media, content = _file_variant(text, variant)
    return {"role": "user", "content": [{"type": "file", "file": {"filename": "notes.bin",
                                                                   "file_data": f"data:{media};base64,{b64(content)}"}}]}


def _file_variant(text: str, variant: int) -> tuple[str, str]:
    media = ("text/plain", "", "application/octet-stream", "text/html", "application/rtf")[variant % 5]
    content = FILE_CONTENT[("plain", "plain", "plain", ("entities", "tags_between")[variant // 5 % 2], "rtf")[variant % 5]]
    return media, content(text)


def openai_chat(carriers: list[tuple[str, str, int]]) -> tuple[str, dict]:
    return "/openai/v1/chat/completions", {"model": "m", "messages": [_openai_chat(*c) for c in carriers]}


def _responses(kind: str, text: str, variant: int) -> dict:
    if kind == "message":
        return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    if kind == "part":
        return {"role": "user", "content": text}
    if kind == "tool_arguments":
        return {"type": "function_call", "call_id": "call_A1b2C3d4E5f6G7h8I9j0K1l2", "name": "lookup",
                "arguments": arguments(text, variant % 2 == 0)}
    if kind == "tool_result":
        return {"type": "function_call_output", "call_id": "call_A1b2C3d4E5f6G7h8I9j0K1l2", "output": text}
    media, content = _file_variant(text, variant)
    return {"role": "user", "content": [{"type": "input_file", "filename": "notes.bin",
                                         "file_data": f"data:{media};base64,{b64(content)}"}]}


def openai_responses(carriers: list[tuple[str, str, int]]) -> tuple[str, dict]:
    items = [_responses(*c) for c in carriers if c[0] != "variable"]
    variables = {f"v{index}": c[1] for index, c in enumerate(carriers) if c[0] == "variable"}
    body = {"model": "m", "input": items}
    if variables:
        body["prompt"] = {"id": "pmpt_" + "0" * 48, "variables": variables}
    return "/openai/v1/responses", body


def _anthropic(kind: str, text: str, variant: int) -> dict:
    if kind == "message":
        return {"role": ("user", "assistant")[variant % 2], "content": text}
    if kind == "part":
        return {"role": "user", "content": [{"type": "text", "text": text}]}
    if kind == "tool_arguments":
        return {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01" + "A" * 22, "name": "lookup",
                                                  "input": {"q": text}}]}
    if kind == "tool_result":
        return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01" + "A" * 22,
                                             "content": text}]}
    if variant % 2:
        return {"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                                          "data": text}}]}
    media, content = _file_variant(text, variant // 2)
    return {"role": "user", "content": [{"type": "document", "source": {
        "type": "base64", "media_type": media or "application/pdf", "data": b64(content)}}]}


def anthropic(carriers: list[tuple[str, str, int]]) -> tuple[str, dict]:
    return "/anthropic/v1/messages", {"model": "claude", "max_tokens": 10, "messages": [_anthropic(*c) for c in carriers]}


def _gemini(kind: str, text: str, variant: int) -> dict:
    if kind in ("message", "part"):
        return {"role": ("user", "model")[variant % 2], "parts": [{"text": text}]}
    if kind == "tool_arguments":
        return {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {"q": text}}}]}
    if kind == "tool_result":
        return {"role": "user", "parts": [{"functionResponse": {"name": "lookup", "response": {"out": text}}}]}
    media, content = _file_variant(text, variant)
    return {"role": "user", "parts": [{"inlineData": {"mimeType": media or "image/png", "data": b64(content)}}]}


def gemini(carriers: list[tuple[str, str, int]]) -> tuple[str, dict]:
    return "/gemini/v1beta/models/gemini-2.5-flash:generateContent", {"contents": [_gemini(*c) for c in carriers]}


def _bedrock(kind: str, text: str, variant: int) -> dict:
    if kind == "message":
        return {"role": ("user", "assistant")[variant % 2], "content": [{"text": text}]}
    if kind == "part":
        return {"role": "user", "content": [{"guardContent": {"text": {"text": text}}}]}
    if kind == "tool_arguments":
        return {"role": "assistant", "content": [{"toolUse": {"toolUseId": "tooluse_" + "a" * 22, "name": "lookup",
                                                              "input": {"q": text}}}]}
    if kind == "tool_result":
        return {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_" + "a" * 22,
                                                            "content": [{"text": text}]}}]}
    fmt = ("txt", "md", "pdf", "html", "docx")[variant % 5]
    content = FILE_CONTENT[("plain", "plain", "plain", "entities", "plain")[variant % 5]](text)
    return {"role": "user", "content": [{"document": {"name": "notes", "format": fmt, "source": {"bytes": b64(content)}}}]}


def bedrock(carriers: list[tuple[str, str, int]]) -> tuple[str, dict]:
    return "/bedrock/model/amazon.nova-lite-v1:0/converse", {"messages": [_bedrock(*c) for c in carriers]}


def _cohere(kind: str, text: str, variant: int) -> dict:
    if kind == "message":
        return {"role": ("user", "system", "assistant")[variant % 3], "content": text}
    if kind == "part":
        return {"role": "user", "content": [{"type": "text", "text": text}]}
    if kind == "tool_arguments":
        return {"role": "assistant", "tool_calls": [{"id": "lookup_abcdefghijkl", "type": "function", "function": {
            "name": "lookup", "arguments": arguments(text, variant % 2 == 0)}}]}
    if kind == "tool_result":
        return {"role": "tool", "tool_call_id": "lookup_abcdefghijkl", "content": text}
    return {"role": "user", "content": [{"type": "document", "document": {"data": {"body": text}}}]}


def cohere(carriers: list[tuple[str, str, int]]) -> tuple[str, dict]:
    return "/cohere/v2/chat", {"model": "command-a", "messages": [_cohere(*c) for c in carriers]}


BUILDERS = {"openai-chat": openai_chat, "openai-responses": openai_responses, "anthropic": anthropic,
            "gemini": gemini, "bedrock": bedrock, "cohere": cohere}
KINDS = {name: ["message", "part", "tool_arguments", "tool_result", "file"] for name in BUILDERS}
KINDS["openai-responses"].append("variable")
