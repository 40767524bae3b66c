"""A second Apache, beside the one of apache_servers.py, that runs the gateway the way an operator's server would:
with the distribution's own mod_wsgi (Debian 12: libapache2-mod-wsgi-py3, mod_wsgi 4.9.4 for Python 3.11), an
unrelated WSGI application already running in it, and the Defines printed by `lockllm-wsgi apache-config`, which
finds the loaded module itself by asking this server (`--apachectl 'apache2 -d ROOT -f base.conf'`).

    with running_distro_apache(config_path, root) as gateway:
        requests.get(f"{gateway.other_base}/", verify=gateway.verify)   # the other application
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Iterator

from support.apache_servers import (APACHE2, APACHE_MODULES, SERVER_BASE_CONF, WORKER_USER, RunningGateway,
                                    _supervised, free_port, loopback_certificate)

from lockllm_wsgi.apache_config import TEMPLATE_DIR, module_file_facts

# Where Debian's libapache2-mod-wsgi-py3 puts its module (its wsgi.load names this path).
DISTRO_MOD_WSGI = os.path.join(APACHE_MODULES, "mod_wsgi.so")
PROCESSES, THREADS = 2, 6


def distro_module_missing() -> str | None:
    """Why the distribution-module tests cannot run here, or None."""
    if not APACHE2:
        return "apache2 is not installed (apt-get install apache2)"
    if not os.path.exists(DISTRO_MOD_WSGI):
        return f"{DISTRO_MOD_WSGI} is missing (apt-get install libapache2-mod-wsgi-py3)"
    _release, python = module_file_facts(DISTRO_MOD_WSGI)
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if python != mine:
        return f"the distribution's mod_wsgi embeds Python {python}, this venv is {mine}"
    if not os.access(sys.executable, os.R_OK) or sys.prefix.startswith("/root"):
        return "this venv is not readable by Apache's user (make it from /usr/bin/python3 outside /root)"
    return None


# Everything an operator's server already has, before lockllm-wsgi: modules, the distribution's mod_wsgi and an
# application of its own in a daemon group with the module's default Python.
_BASE_CONF = SERVER_BASE_CONF + """\
# The Server header names mod_wsgi's release: the tests check which module answered.
ServerTokens Full
# As Debian's mods-enabled/wsgi.load has it.
LoadModule wsgi_module {distro_module}
WSGISocketPrefix {root}/run/wsgi
# The application this server already runs: its own daemon group, the module's own Python (no python-home).
WSGIDaemonProcess other processes=1 threads=2 display-name=%{{GROUP}}
WSGIScriptAlias /other {root}/other.wsgi process-group=other application-group=%{{GLOBAL}}
"""

_HTTPD_CONF = """\
Include {root}/base.conf
# What `lockllm-wsgi apache-config` printed, then the shipped site unchanged.
Include {root}/lockllm.conf
Include {templates}/lockllm-vhost.conf
"""

OTHER_APP = '''\
import json, os, sys
import mod_wsgi

def application(environ, start_response):
    body = json.dumps({"app": "other", "prefix": sys.prefix, "python": "%d.%d" % sys.version_info[:2],
                       "mod_wsgi": ".".join(map(str, mod_wsgi.version)), "group": mod_wsgi.process_group,
                       "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
'''


@dataclass
class DistroGateway(RunningGateway):
    other_base: str = ""  # the unrelated application, on the same HTTPS vhost
    apache_config: str = ""  # what `lockllm-wsgi apache-config` printed


@contextlib.contextmanager
def running_distro_apache(config_path: str, root: str) -> Iterator[DistroGateway]:
    root = os.path.join(root, "apache2-distro")
    os.makedirs(os.path.join(root, "run"), mode=0o755)
    cert, key = loopback_certificate()
    http_port, https_port = free_port(), free_port()
    with open(os.path.join(root, "other.wsgi"), "w", encoding="utf-8") as handle:
        handle.write(OTHER_APP)
    with open(os.path.join(root, "base.conf"), "w", encoding="utf-8") as handle:
        handle.write(_BASE_CONF.format(root=root, user=WORKER_USER, http_port=http_port, https_port=https_port,
                                       modules=APACHE_MODULES, distro_module=DISTRO_MOD_WSGI))
    # The operator's command: apache-config asks this server which mod_wsgi it loads.
    script = os.path.join(root, "lockllm.wsgi")
    printed = subprocess.run(
        [sys.executable, "-m", "lockllm_wsgi.cli", "apache-config", "--config", config_path, "--layout", "debian",
         "--wsgi-script", script, "--write-script", "--apachectl", f"{APACHE2} -d {root} -f {root}/base.conf",
         "--processes", str(PROCESSES), "--threads", str(THREADS),
         "--define", "LOCKLLM_SERVER_NAME=127.0.0.1", "--define", f"LOCKLLM_HTTP_PORT={http_port}",
         "--define", f"LOCKLLM_HTTPS_PORT={https_port}", "--define", f"LOCKLLM_TLS_CERT={cert}",
         "--define", f"LOCKLLM_TLS_KEY={key}", "--define", f"LOCKLLM_LOG_DIR={root}"],
        check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout
    with open(os.path.join(root, "lockllm.conf"), "w", encoding="utf-8") as handle:
        handle.write(printed)
    conf = os.path.join(root, "httpd.conf")
    with open(conf, "w", encoding="utf-8") as handle:
        handle.write(_HTTPD_CONF.format(root=root, templates=TEMPLATE_DIR))
    gateway = DistroGateway("apache2-distro", f"https://127.0.0.1:{https_port}/llm", cert,
                            os.path.join(root, "lockllm-error.log"), http_base=f"http://127.0.0.1:{http_port}/llm",
                            other_base=f"https://127.0.0.1:{https_port}/other", apache_config=printed)
    open(gateway.error_log, "a").close()
    with _supervised([APACHE2, "-d", root, "-f", conf, "-DFOREGROUND"], gateway,
                     os.path.join(root, "stderr.log")) as running:
        yield running
