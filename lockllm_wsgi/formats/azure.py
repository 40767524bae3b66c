"""Azure OpenAI: OpenAI's bodies and error shape under Azure's paths.

Deployment paths (`/openai/deployments/{deployment}/chat/completions?api-version=...`, also completions and
embeddings) and the v1 paths (`/openai/v1/chat/completions`, responses, completions, embeddings) are read by the
OpenAI walkers; any other path is refused. The `api-key` header and the `api-version` query go through unchanged.
Azure's "On your data" `data_sources` is refused as an unknown field: its documents are fetched by Azure where
the gateway cannot scan them, and its entries carry search-service keys::

    fmt = FORMATS["azure"]
    fmt.extract("/openai/deployments/gpt-4o/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
"""

from __future__ import annotations

import re

from .openai import ENDPOINT_WALKERS, OpenAIFormat

_DEPLOYMENT_ENDPOINTS = ("chat/completions", "completions", "embeddings")


class AzureFormat(OpenAIFormat):
    name = "azure"
    endpoints = tuple(
        (re.compile(rf"^/openai/deployments/[^/]+/{suffix}$"), ENDPOINT_WALKERS[suffix])
        for suffix in _DEPLOYMENT_ENDPOINTS
    ) + tuple((re.compile(rf"^/openai/v1/{suffix}$"), walk) for suffix, walk in ENDPOINT_WALKERS.items())
