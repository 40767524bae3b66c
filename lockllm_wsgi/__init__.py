"""lockllm-wsgi: a prompt-injection filtering gateway for LLM APIs, run inside Apache with mod_wsgi.

    from lockllm_wsgi import create_app
    application = create_app("/etc/lockllm/lockllm.ini")

A `.wsgi` script uses `wsgi_application` instead, which answers JSON when the gateway cannot be built.
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


def wsgi_application(path: str):
    """`application` for a `.wsgi` script: the gateway for the INI file at `path`, switched to a new one when the
    file changes (reload.py); while the file cannot be built (a bad INI file put in place before `apachectl -k
    graceful`), an app that answers every request with a JSON 503 naming the problem, logged once, instead of an
    import error and Apache's HTML 500 page on every request."""
    from .reload import ReloadingApp

    return ReloadingApp(path, build_gateway)


def build_gateway(path: str, previous: object = None):
    """(app, problem): the gateway for `path` with its start-up warnings logged, or (UnavailableApp, why not); a
    gateway replacing `previous` keeps its metrics."""
    try:
        from .app import GatewayApp
        from .config import load_settings

        app = GatewayApp(load_settings(path), metrics=getattr(previous, "metrics", None))
    except Exception as error:  # noqa: BLE001 - whatever stops the gateway, clients must get an answer they read
        import logging

        from .config import ConfigError
        from .unavailable import UnavailableApp, describe

        if not isinstance(error, ConfigError):
            logging.getLogger(__name__).exception("the gateway could not be built from %s", path)
        return UnavailableApp(error), describe(error)
    from .advice import config_warnings
    from .audit import log_event
    from .permissions import Account, permission_problems

    for warning in config_warnings(app.settings):
        log_event("config_warning", warning=warning)

    for problem in permission_problems(app.settings, Account.current()):
        log_event("permission_problem", what=problem.what, path=problem.path, problem=problem.reason, fix=problem.fix)
    return app, None
