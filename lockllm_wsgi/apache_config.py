"""The Apache settings of one installation: the shipped snippets' Defines filled in from the INI file and this venv.

The snippets in apache/ (installed as lockllm_wsgi/apache/) are used unchanged; only lockllm-defines.conf is
printed with this installation's values, and the `.wsgi` script is written from its template::

    values = install_values(load_settings("/etc/lockllm/lockllm.ini"), "/etc/lockllm/lockllm.wsgi")
    print(server_config(values))

`lockllm-wsgi serve` (express.py) builds mod_wsgi-express's options from the same `install_values`, so both ways of
running under Apache share one set of limits and timeouts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from typing import Mapping

from .config import Settings

# The snippets, shipped in the package (lockllm_wsgi/apache is the top-level apache/ folder).
TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apache")
DEFINES_FILE = "lockllm-defines.conf"
SCRIPT_FILE = "lockllm.wsgi"
# Extra seconds of socket timeout over the relay's upstream read timeout, so Apache never cuts a stream that the
# relay itself still considers alive.
TIMEOUT_MARGIN_SECONDS = 60
# mod_wsgi's request-timeout recycles the whole daemon process, killing every stream in it: an hour is a fail-safe
# for wedged threads, far above any generation (the relay enforces its own per-read deadline).
DEFAULT_REQUEST_TIMEOUT = 3600
# Apache's LimitRequestBody sits this far above the app's cap, so the app (which reads a chunked body in 64 KiB
# pieces until it passes the cap) answers every body it can judge, in the route's error shape, counted and logged;
# Apache only stops, before reading, a Content-Length the app would refuse anyway. Apache refusing a chunked body
# the app is already reading appends a second error page to the response.
BODY_LIMIT_MARGIN_BYTES = 1024 * 1024
# mod_wsgi (6.x) holds a stalled daemon response for this many milliseconds before flushing it to the client
# (default 5, meant for pacing filters such as mod_ratelimit, which we do not use): every streamed event, the
# first one included, would wait 5 ms plus a scheduling round (+7 ms to the first chunk in benchmarks/streaming.py).
# 0 flushes as soon as the daemon has nothing more to give. lockllm-location.conf sets the same value.
RESPONSE_FLUSH_DELAY_MS = 0
DEFAULT_PREFIX = "/llm"
DEFAULT_PROCESSES = 2
DEFAULT_THREADS = 15
DEFAULT_WORKER_USER = "www-data"

_DEFINE_LINE = re.compile(r"^Define (LOCKLLM_[A-Z_]+) .*$", re.MULTILINE)
_CONFIG_LINE = re.compile(r"^CONFIG = .*$", re.MULTILINE)


def code_dir() -> str:
    """The folder holding the lockllm_wsgi package: site-packages, or a source checkout run in place."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def install_values(settings: Settings, wsgi_script: str, prefix: str = DEFAULT_PREFIX,
                   processes: int = DEFAULT_PROCESSES, threads: int = DEFAULT_THREADS,
                   user: str = DEFAULT_WORKER_USER, group: str | None = None) -> dict[str, str]:
    """The Define values that follow from the INI file and from where this Python and package live."""
    return {
        "LOCKLLM_PREFIX": "/" + prefix.strip("/"),
        "LOCKLLM_VENV": sys.prefix,
        "LOCKLLM_CODE": code_dir(),
        "LOCKLLM_WSGI_SCRIPT": os.path.abspath(wsgi_script),
        "LOCKLLM_USER": user,
        "LOCKLLM_GROUP": group or user,
        "LOCKLLM_PROCESSES": str(processes),
        "LOCKLLM_THREADS": str(threads),
        "LOCKLLM_SOCKET_TIMEOUT": str(int(settings.upstream.read_timeout) + TIMEOUT_MARGIN_SECONDS),
        "LOCKLLM_REQUEST_TIMEOUT": str(DEFAULT_REQUEST_TIMEOUT),
        "LOCKLLM_MAX_BODY": str(settings.limits.max_body_bytes + BODY_LIMIT_MARGIN_BYTES),
        "LOCKLLM_APACHE_DIR": TEMPLATE_DIR,
    }


def _template(name: str) -> str:
    with open(os.path.join(TEMPLATE_DIR, name), encoding="utf-8") as handle:
        return handle.read()


def render_defines(values: Mapping[str, str]) -> str:
    """lockllm-defines.conf with `values` in place of the shipped examples; an unknown name is an error."""
    text = _template(DEFINES_FILE)
    known = set(_DEFINE_LINE.findall(text))
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{', '.join(unknown)} is not defined in {DEFINES_FILE} (known: {', '.join(sorted(known))})")
    for name, value in values.items():
        if not value or any(char.isspace() for char in value):
            # A Define value ends at the first space; a path with spaces would silently become another path.
            raise ValueError(f"{name} must be one word without spaces, not {value!r}")
    return _DEFINE_LINE.sub(lambda match: f"Define {match[1]} {values.get(match[1], match[0].split(' ', 2)[2])}",
                            text)


def module_config() -> str:
    """The LoadModule line for the venv's mod_wsgi, as `mod_wsgi-express module-config` prints it."""
    express = shutil.which("mod_wsgi-express", path=os.path.dirname(sys.executable)) or shutil.which("mod_wsgi-express")
    if not express:
        raise SystemExit("lockllm-wsgi: mod_wsgi-express is not installed; pip install 'lockllm-wsgi[apache]' "
                         "(needs Debian's apache2 and apache2-dev)")
    return subprocess.run([express, "module-config"], check=True, capture_output=True, text=True).stdout.strip()


def server_config(values: Mapping[str, str]) -> str:
    """The server-level file for this installation: mod_wsgi, then the Defines; the snippets are Included as is."""
    return "\n".join([
        "# lockllm-wsgi for this installation, printed by `lockllm-wsgi apache-config`. Save it as",
        "# /etc/apache2/conf-available/lockllm.conf and `a2enconf lockllm` (after `a2dismod wsgi`: this loads the",
        "# venv's own mod_wsgi), then Include one of these, which use the Defines below unchanged:",
        f"#   inside your HTTPS <VirtualHost>:  Include {TEMPLATE_DIR}/lockllm-location.conf",
        f"#   or, as a whole site:             Include {TEMPLATE_DIR}/lockllm-vhost.conf",
        "",
        "# mod_wsgi built for the venv's Python; Debian's libapache2-mod-wsgi-py3 must not be loaded as well.",
        module_config(),
        "",
        render_defines(values),
    ])


def render_script(config_path: str) -> str:
    """lockllm.wsgi bound to `config_path` (absolute)."""
    return _CONFIG_LINE.sub(lambda _match: f"CONFIG = {os.path.abspath(config_path)!r}", _template(SCRIPT_FILE))


def write_script(path: str, config_path: str) -> str:
    """Write the `.wsgi` script for `config_path` at `path`, readable by Apache's workers (0644)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o755, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_script(config_path))
    os.chmod(path, 0o644)
    return os.path.abspath(path)
