"""OpenAI-compatible hosts by name: `preset = NAME` in a `[route:NAME]` section fills `upstream` from this table
and `format = openai`, so a route to one of them needs no URL::

    [route:groq]
    prefix = /groq
    preset = groq

Each upstream holds the host's own path prefix but not the `/v1` its SDKs add, so a client's `base_url` is
`{gateway}{prefix}/v1` (perplexity: `{gateway}{prefix}`, it serves `/chat/completions` at the root).
"""

from __future__ import annotations

# name -> upstream base URL, without the /v1 the clients add. ollama and vllm are servers on the same machine,
# on their default ports; set `upstream` beside `preset` to point elsewhere.
PRESETS: dict[str, str] = {
    "groq": "https://api.groq.com/openai",
    "together": "https://api.together.xyz",
    "deepseek": "https://api.deepseek.com",
    "openrouter": "https://openrouter.ai/api",
    "xai": "https://api.x.ai",
    "fireworks": "https://api.fireworks.ai/inference",
    "perplexity": "https://api.perplexity.ai",
    "mistral": "https://api.mistral.ai",
    "ollama": "http://localhost:11434",
    "vllm": "http://localhost:8000",
}
