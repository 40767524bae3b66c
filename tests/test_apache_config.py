"""The shipped Apache snippets, `lockllm-wsgi apache-config` and the mod_wsgi-express command, without starting
Apache (tests/integration/test_apache.py runs them under a real one)."""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
import tempfile

import pytest

from lockllm_wsgi import cli, express
from lockllm_wsgi.apache_config import (BODY_LIMIT_MARGIN_BYTES, TEMPLATE_DIR, install_values, render_defines,
                                        write_script)
from lockllm_wsgi.app import GatewayApp
from lockllm_wsgi.config import load_settings
from lockllm_wsgi.express import express_command
from support.apache_servers import missing_express

NO_EXPRESS = missing_express()
needs_express = pytest.mark.skipif(NO_EXPRESS is not None, reason=NO_EXPRESS or "")

INI = """\
[scanner]
url = http://127.0.0.1:9/v1/scan
api_key = llm-test-key-0001
[limits]
max_body_bytes = 65536
[upstream]
read_timeout = 120
[route:openai]
prefix = /openai
upstream = https://api.openai.com
format = openai
"""
SNIPPETS = ("lockllm-location.conf", "lockllm-vhost.conf", "lockllm-errors.conf", "lockllm-error-documents.conf")


def _read(name: str) -> str:
    with open(os.path.join(TEMPLATE_DIR, name), encoding="utf-8") as handle:
        return handle.read()


@pytest.fixture
def public_config():
    """An INI file www-data could read (pytest's tmp_path is 0700 under root)."""
    folder = tempfile.mkdtemp(prefix="lockllm-config-")
    os.chmod(folder, 0o755)
    path = os.path.join(folder, "lockllm.ini")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(INI)
    os.chmod(path, 0o644)
    yield path
    shutil.rmtree(folder)


def test_every_variable_the_snippets_use_is_defined_once_and_every_define_is_used():
    defined = re.findall(r"^Define (\w+) ", _read("lockllm-defines.conf"), re.MULTILINE)
    used = {name for snippet in SNIPPETS for name in re.findall(r"\$\{(\w+)\}", _read(snippet))}
    assert len(defined) == len(set(defined))
    assert used == set(defined)


def test_install_values_follow_the_ini_file_and_this_python(public_config):
    values = install_values(load_settings(public_config), "/etc/lockllm/lockllm.wsgi", prefix="gateway/")
    assert values["LOCKLLM_PREFIX"] == "/gateway"
    assert values["LOCKLLM_SOCKET_TIMEOUT"] == "180"  # read_timeout 120 + the margin
    assert values["LOCKLLM_MAX_BODY"] == str(65536 + BODY_LIMIT_MARGIN_BYTES)
    assert os.path.isfile(os.path.join(values["LOCKLLM_CODE"], "lockllm_wsgi", "__init__.py"))
    assert os.path.isfile(os.path.join(values["LOCKLLM_APACHE_DIR"], "lockllm-location.conf"))


@pytest.mark.parametrize("values, problem", [
    pytest.param({"LOCKLLM_NOPE": "1"}, "LOCKLLM_NOPE is not defined", id="unknown-name"),
    pytest.param({"LOCKLLM_WSGI_SCRIPT": "/srv/my app/x.wsgi"}, "without spaces", id="space-in-value"),
    pytest.param({"LOCKLLM_PREFIX": ""}, "without spaces", id="empty-value"),
])
def test_render_defines_refuses_values_apache_would_misread(values, problem):
    with pytest.raises(ValueError, match=problem):
        render_defines(values)


def test_render_defines_replaces_only_the_given_values():
    text = render_defines({"LOCKLLM_PREFIX": "/gw", "LOCKLLM_THREADS": "4"})
    assert "Define LOCKLLM_PREFIX /gw\n" in text and "Define LOCKLLM_THREADS 4\n" in text
    assert "Define LOCKLLM_HTTPS_PORT 443\n" in text


def test_the_written_script_binds_the_app_to_its_config(public_config, tmp_path):
    script = write_script(str(tmp_path / "lockllm.wsgi"), public_config)
    assert oct(os.stat(script).st_mode & 0o777) == "0o644"
    application = runpy.run_path(script)["application"]  # reloads its config when the file changes (reload.py)
    assert isinstance(application.current, GatewayApp) and application.current.settings.source == public_config
    application.current.close()


@needs_express  # its LoadModule line comes from `mod_wsgi-express module-config`
def test_apache_config_prints_module_and_defines_for_this_installation(public_config, capsys):
    assert cli.main(["apache-config", "--config", public_config, "--venv-mod-wsgi",
                     "--define", "LOCKLLM_SERVER_NAME=llm.test"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^LoadModule wsgi_module ", printed, re.MULTILINE)
    assert "Define LOCKLLM_SERVER_NAME llm.test\n" in printed
    assert f"Define LOCKLLM_WSGI_SCRIPT {os.path.dirname(public_config)}/lockllm.wsgi\n" in printed
    assert not os.path.exists(os.path.join(os.path.dirname(public_config), "lockllm.wsgi"))  # only with --write-script


@needs_express
@pytest.mark.parametrize("euid, worker_options", [
    pytest.param(0, ["--user", "www-data", "--group", "www-data"], id="root-drops-to-www-data"),
    pytest.param(1000, [], id="normal-user-runs-as-itself"),
])
def test_serve_command_matches_the_snippets(public_config, monkeypatch, euid, worker_options):
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    # Wherever this Python lives (tox's venvs of pyenv's Pythons are under /root): the readable case.
    monkeypatch.setattr(express, "_readable_by", lambda user, path: True)
    root = os.path.join(os.path.dirname(public_config), "server")
    command = express_command(load_settings(public_config), public_config, "127.0.0.1", 8000, server_root=root)
    options = dict(zip(command, command[1:]))
    values = install_values(load_settings(public_config), os.path.join(root, "lockllm.wsgi"))
    assert options["--socket-timeout"] == values["LOCKLLM_SOCKET_TIMEOUT"]
    assert options["--limit-request-body"] == values["LOCKLLM_MAX_BODY"]
    assert options["--python-path"] == values["LOCKLLM_CODE"]
    with open(os.path.join(TEMPLATE_DIR, "lockllm-location.conf"), encoding="utf-8") as snippet:
        assert f"response-flush-delay={options['--response-flush-delay']}" in snippet.read()
    assert os.path.isfile(options["--include-file"]) and "--chunked-request" in command
    assert command[-len(worker_options):] == worker_options if worker_options else "--user" not in command


@needs_express
@pytest.mark.parametrize("processes, threads", [(2, 15), (2, 25), (4, 5)])
def test_serve_starts_every_apache_front_thread_and_keeps_them(public_config, monkeypatch, processes, threads):
    # Each request holds a front thread for its whole life: started on demand (once a second), a burst queued in
    # front of idle daemons. Read from the httpd.conf mod_wsgi-express itself writes for the command.
    monkeypatch.setattr(express, "_readable_by", lambda user, path: True)
    root = os.path.join(os.path.dirname(public_config), "server")
    command = express_command(load_settings(public_config), public_config, "127.0.0.1", 8000, processes=processes,
                              threads=threads, server_root=root)
    subprocess.run([command[0], "setup-server", *command[2:]], check=True, capture_output=True)
    with open(os.path.join(root, "httpd.conf"), encoding="utf-8") as conf:
        event = re.search(r"<IfModule mpm_event_module>\s*<IfDefine !ONE_PROCESS>(.*?)</IfDefine>", conf.read(),
                          re.DOTALL).group(1)
    mpm = {name: int(value) for name, value in re.findall(r"^(\w+) (\d+)$", event, re.MULTILINE)}
    front_threads = mpm["ServerLimit"] * mpm["ThreadsPerChild"]
    assert front_threads >= processes * threads
    assert mpm["StartServers"] == mpm["ServerLimit"]
    assert mpm["MinSpareThreads"] == mpm["MaxSpareThreads"] == front_threads


@needs_express
def test_serve_as_root_refuses_a_config_the_workers_cannot_read(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    config = tmp_path / "lockllm.ini"
    readable_by = express._readable_by  # checked for the config only, wherever this Python lives
    monkeypatch.setattr(express, "_readable_by", lambda user, path: path != str(config) or readable_by(user, path))
    config.write_text(INI)
    config.chmod(0o600)
    with pytest.raises(SystemExit, match="cannot read the configuration"):
        express_command(load_settings(str(config)), str(config), "127.0.0.1", 8000, server_root=str(tmp_path / "s"))
