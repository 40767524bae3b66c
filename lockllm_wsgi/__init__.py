"""lockllm-wsgi: a prompt-injection filtering gateway for LLM APIs, run inside Apache with mod_wsgi.

    from lockllm_wsgi import create_app
    application = create_app("/etc/lockllm/lockllm.ini")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .app import GatewayApp
    from .config import Settings


def create_app(path_or_settings: Union[str, "Settings"]) -> "GatewayApp":
    """The WSGI application for an INI file path or a Settings object."""
    from .app import GatewayApp
    from .config import load_settings

    settings = load_settings(path_or_settings) if isinstance(path_or_settings, str) else path_or_settings
    return GatewayApp(settings)
