"""`apache-config --layout rhel` in an httpd-style tree built here: conf/httpd.conf reading conf.modules.d/*.conf and
conf.d/*.conf, a relative `LoadModule wsgi_module modules/...` (RHEL: modules/mod_wsgi_python3.so; here Debian's
module behind a modules/ link, as /etc/httpd/modules links to /usr/lib64/httpd/modules), the printed file saved as
conf.d/lockllm.conf and the location snippet Included in ssl.conf's vhost. Debian's apache2 checks it (-t) and
serves a request through it.

Not checked here (no RHEL machine): the `apache` user (absent; the daemon runs as www-data, the printed default is
checked in tests/test_apache_distro_config.py), SELinux (booleans, file contexts, the socket prefix), RHEL's own
httpd build, apachectl wrapper and python3-mod_wsgi (4.7.1, Python 3.9, which this project no longer supports)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import requests

from lockllm_wsgi.apache_config import TEMPLATE_DIR

from support.apache_distro import DISTRO_MOD_WSGI, distro_module_missing
from support.apache_servers import (APACHE2, APACHE_MODULES, RunningGateway, WORKER_USER, _supervised, free_port,
                                    public_folder, loopback_certificate)
from support.gateway import write_config

MISSING = distro_module_missing()
pytestmark = [pytest.mark.apache, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

HTTPD_CONF = """\
# As RHEL's /etc/httpd/conf/httpd.conf, trimmed: relative paths under ServerRoot, modules and sites from folders.
ServerRoot "{root}"
Listen 127.0.0.1:{http_port}
Include conf.modules.d/*.conf
User {user}
Group {user}
ServerName 127.0.0.1
DefaultRuntimeDir run
PidFile run/httpd.pid
ErrorLog "logs/error_log"
LogLevel warn
LogFormat "%h %l %u %t \\"%r\\" %>s %b" common
CustomLog "logs/access_log" common
IncludeOptional conf.d/*.conf
"""

MODULES = {
    "00-base.conf": ["mpm_event", "authz_core", "alias", "env", "filter", "deflate", "socache_shmcb"],
    "00-ssl.conf": ["ssl"],
}

SSL_CONF = """\
# As RHEL's conf.d/ssl.conf (mod_ssl's package), with the operator's one added line.
Listen 127.0.0.1:{https_port} https
<VirtualHost _default_:{https_port}>
    ErrorLog logs/ssl_error_log
    SSLEngine on
    SSLCertificateFile {cert}
    SSLCertificateKeyFile {key}
    Include {templates}/lockllm-location.conf
</VirtualHost>
"""


def _httpd_tree(root: str) -> dict[str, object]:
    for folder in ("conf", "conf.d", "conf.modules.d", "logs", "run"):
        os.makedirs(os.path.join(root, folder), mode=0o755, exist_ok=True)
    os.symlink(APACHE_MODULES, os.path.join(root, "modules"))
    ports = {"http_port": free_port(), "https_port": free_port()}
    with open(os.path.join(root, "conf", "httpd.conf"), "w", encoding="utf-8") as handle:
        handle.write(HTTPD_CONF.format(root=root, user=WORKER_USER, **ports))
    for name, modules in MODULES.items():
        with open(os.path.join(root, "conf.modules.d", name), "w", encoding="utf-8") as handle:
            handle.writelines(f"LoadModule {module}_module modules/mod_{module}.so\n" for module in modules)
    with open(os.path.join(root, "conf.modules.d", "10-wsgi-python3.conf"), "w", encoding="utf-8") as handle:
        handle.write(f"LoadModule wsgi_module modules/{os.path.basename(DISTRO_MOD_WSGI)}\n")
    return ports


@pytest.fixture(scope="module")
def rhel_site(scanner_server, provider_server):
    root = public_folder("lockllm-rhel-")
    ports = _httpd_tree(root)
    config = write_config(pathlib.Path(root), scanner_server.url_for("/v1/scan"),
                          provider_server.url_for("").rstrip("/"))
    httpd = [APACHE2, "-d", root, "-f", os.path.join(root, "conf", "httpd.conf")]
    # The operator's commands, in their order: print conf.d/lockllm.conf, then Include the snippet in ssl.conf.
    printed = subprocess.run(
        [sys.executable, "-m", "lockllm_wsgi.cli", "apache-config", "--config", config, "--layout", "rhel",
         "--write-script", "--apachectl", " ".join(httpd), "--user", WORKER_USER,
         "--define", f"LOCKLLM_LOG_DIR={root}/logs"],
        check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout
    with open(os.path.join(root, "conf.d", "lockllm.conf"), "w", encoding="utf-8") as handle:
        handle.write(printed)
    cert, key = loopback_certificate()
    with open(os.path.join(root, "conf.d", "ssl.conf"), "w", encoding="utf-8") as handle:
        handle.write(SSL_CONF.format(https_port=ports["https_port"], cert=cert, key=key, templates=TEMPLATE_DIR))
    yield root, httpd, printed, ports, cert
    shutil.rmtree(root, ignore_errors=True)


def test_printed_file_is_one_conf_d_file_for_the_loaded_module(rhel_site):
    _root, _httpd, printed, _ports, _cert = rhel_site
    assert "/etc/httpd/conf.d/lockllm.conf" in printed and "a2enconf" not in printed
    assert f"loaded by the server from {_root}/modules/{os.path.basename(DISTRO_MOD_WSGI)}" in printed
    assert "setsebool -P httpd_can_network_connect 1" in printed
    assert not any(line.startswith("LoadModule") for line in printed.splitlines())


def test_httpd_accepts_the_tree(rhel_site):
    _root, httpd, _printed, _ports, _cert = rhel_site
    checked = subprocess.run(httpd + ["-t"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0 and "Syntax OK" in checked.stderr, checked.stderr


def test_the_gateway_answers_through_the_rhel_tree(rhel_site):
    root, httpd, _printed, ports, cert = rhel_site
    gateway = RunningGateway("httpd-rhel", f"https://127.0.0.1:{ports['https_port']}/llm", cert,
                             os.path.join(root, "logs", "ssl_error_log"))
    open(gateway.error_log, "a").close()
    with _supervised(httpd + ["-DFOREGROUND"], gateway, os.path.join(root, "stderr.log")):
        answer = requests.get(f"{gateway.base}/openai/v1/models", verify=gateway.verify, timeout=10)
    assert "x-request-id" in answer.headers
