"""Settings that load but are probably not what the operator meant: said at start-up (`serve`, `check-config`, each
daemon's log), never refused, since a provider may really serve such a path::

    for warning in config_warnings(settings):
        print(warning)  # [route:openai] upstream https://api.openai.com/v1 ends in /v1, which ...
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .config import Settings

# The first path segment each format's clients send (the SDK puts it in every path): an upstream ending in it
# would have the provider see it twice (/v1/v1/chat/completions, a 404). Bedrock's paths (/model/...) carry none.
CLIENT_PATH_SEGMENTS = {
    "openai": ("v1",),
    "anthropic": ("v1",),
    "cohere": ("v1", "v2"),
    "gemini": ("v1", "v1beta"),
    "azure": ("openai",),
}


def config_warnings(settings: Settings) -> list[str]:
    warnings = []
    for route in settings.routes:
        last = urlsplit(route.upstream).path.rstrip("/").rsplit("/", 1)[-1]
        if last and last in CLIENT_PATH_SEGMENTS.get(route.format, ()):
            base = route.upstream[: -len(last) - 1]
            warnings.append(f"[route:{route.name}] upstream {route.upstream} ends in /{last}, which the {route.format} "
                            f"SDK already puts in every path (the provider would see /{last}/{last}/...); "
                            f"use upstream = {base}")
    if settings.scanner.offline_model != "off" and settings.scanner.backend != "offline":
        warnings.append(f"[scanner] offline_model = {settings.scanner.offline_model} is not used: it belongs to the "
                        f"offline scanner, and backend = {settings.scanner.backend}")
    return warnings
