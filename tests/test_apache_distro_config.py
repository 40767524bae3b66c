"""`lockllm-wsgi apache-config` beside what an Apache already runs: which mod_wsgi the server loads (asked of a fake
apachectl here; tests/integration/test_apache_distro.py asks a real one), the options that release knows, the
Python it embeds, and the Debian and RHEL layouts. No Apache is started."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile

import pytest

from lockllm_wsgi import apache_config, cli
from lockllm_wsgi.apache_config import (ModWsgi, TEMPLATE_DIR, check_mod_wsgi, install_values, loaded_mod_wsgi,
                                        module_file_facts, parse_version, server_config, told_mod_wsgi)
from lockllm_wsgi.config import load_settings

INI = """\
[scanner]
url = http://127.0.0.1:9/v1/scan
api_key = llm-test-key-0001
cache = sqlite:////var/cache/lockllm-test/verdicts.sqlite
[route:openai]
prefix = /openai
upstream = https://api.openai.com
format = openai
"""
MINE = f"{sys.version_info[0]}.{sys.version_info[1]}"


@pytest.fixture
def public_config():
    folder = tempfile.mkdtemp(prefix="lockllm-distro-config-")
    os.chmod(folder, 0o755)
    path = os.path.join(folder, "lockllm.ini")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(INI)
    yield path
    shutil.rmtree(folder)


def fake_module(folder, release: str, python: str) -> str:
    """A file carrying what a built mod_wsgi.so carries: its release string and the libpython it links."""
    path = os.path.join(folder, "mod_wsgi.so")
    with open(path, "wb") as handle:
        handle.write(b"\x7fELF\x00libpython" + python.encode() + b".so.1.0\x00" + b"3.11.1\x00" + release.encode()
                     + b"\x00mod_wsgi/%s\x00")
    return path


def fake_apachectl(folder, modules: str, load_line: str, server_root: str) -> str:
    """A script answering -M, -t -D DUMP_RUN_CFG and -t -D DUMP_INCLUDES as apachectl does."""
    conf = os.path.join(folder, "wsgi.load")
    with open(conf, "w", encoding="utf-8") as handle:
        handle.write(load_line + "\n")
    script = os.path.join(folder, "apachectl")
    with open(script, "w", encoding="utf-8") as handle:
        handle.write(f"""#!/bin/sh
case "$*" in
  -M) printf 'Loaded Modules:\\n core_module (static)\\n{modules}' ;;
  *DUMP_RUN_CFG*) printf 'ServerRoot: "{server_root}"\\nMain DocumentRoot: "/var/www/html"\\n' ;;
  *DUMP_INCLUDES*) printf 'Included configuration files:\\n  (*) /dev/null\\n    (146) {conf}\\n' ;;
  *) exit 1 ;;
esac
""")
    os.chmod(script, 0o755)
    return script


@pytest.mark.parametrize("text, version", [
    pytest.param("4.9", (4, 9), id="major-minor"),
    pytest.param("4.9.4", (4, 9, 4), id="release"),
    pytest.param(" 6.1 ", (6, 1), id="spaces"),
])
def test_parse_version(text, version):
    assert parse_version(text) == version


@pytest.mark.parametrize("text", ["4", "four.nine", "4.9-1+b2", ""])
def test_parse_version_refuses_what_is_not_a_release(text):
    with pytest.raises(ValueError, match="X.Y"):
        parse_version(text)


def test_module_file_facts_read_the_release_and_the_python(tmp_path):
    assert module_file_facts(fake_module(str(tmp_path), "4.7.1", "3.9")) == ((4, 7, 1), "3.9")


@pytest.mark.skipif(not os.path.exists("/usr/lib/apache2/modules/mod_wsgi.so"),
                    reason="Debian's libapache2-mod-wsgi-py3 is not installed")
def test_module_file_facts_of_debians_module():
    release, python = module_file_facts("/usr/lib/apache2/modules/mod_wsgi.so")
    assert release is not None and release >= (4, 7) and python and python.startswith("3.")


def test_the_loaded_module_is_found_through_the_servers_configuration(tmp_path):
    # A RHEL-style relative LoadModule path, resolved against the ServerRoot apachectl reports.
    os.makedirs(tmp_path / "modules")
    fake_module(str(tmp_path / "modules"), "4.7.1", "3.9")
    apachectl = fake_apachectl(str(tmp_path), " wsgi_module (shared)\\n",
                               "LoadModule wsgi_module modules/mod_wsgi.so", str(tmp_path))
    module = loaded_mod_wsgi(apachectl)
    assert module == ModWsgi((4, 7, 1), f"loaded by the server from {tmp_path}/modules/mod_wsgi.so", python="3.9")
    assert not module.knows_response_flush_delay and module.load_module is None


def test_the_venvs_own_module_loaded_by_an_earlier_file_is_printed_again(tmp_path, monkeypatch):
    # Re-running apache-config on a server whose lockllm.conf loads the venv's module: the new file replaces the
    # old one, so it must load the module again.
    monkeypatch.setattr(apache_config, "module_config", lambda: 'LoadModule wsgi_module "/venv/mod_wsgi.so"')
    apachectl = fake_apachectl(str(tmp_path), " wsgi_module (shared)\\n",
                               f"LoadModule wsgi_module {sys.prefix}/lib/mod_wsgi.so", "/")
    module = loaded_mod_wsgi(apachectl)
    assert module.source == "this venv's (pip)" and module.load_module == 'LoadModule wsgi_module "/venv/mod_wsgi.so"'


def test_a_server_loading_no_mod_wsgi_is_told_apart(tmp_path):
    assert loaded_mod_wsgi(fake_apachectl(str(tmp_path), " ssl_module (shared)\\n", "", str(tmp_path))) is None


def test_a_module_whose_release_cannot_be_read_asks_to_be_told(tmp_path):
    (tmp_path / "mod_wsgi.so").write_bytes(b"\x7fELF stripped")
    apachectl = fake_apachectl(str(tmp_path), " wsgi_module (shared)\\n",
                               f"LoadModule wsgi_module {tmp_path}/mod_wsgi.so", "/")
    with pytest.raises(SystemExit, match="--mod-wsgi-version"):
        loaded_mod_wsgi(apachectl)


def test_an_apachectl_that_fails_asks_to_be_told(tmp_path):
    with pytest.raises(SystemExit, match="--mod-wsgi-version"):
        loaded_mod_wsgi(f"{tmp_path}/no-such-apachectl")


@pytest.mark.parametrize("module, problem", [
    pytest.param(ModWsgi((4, 6, 8), "x"), "older than 4.7", id="too-old"),
    pytest.param(ModWsgi((4, 9, 4), "x", python="3.8" if MINE != "3.8" else "3.7"), "make the venv from",
                 id="another-python"),
])
def test_check_mod_wsgi_refuses(module, problem):
    with pytest.raises(SystemExit, match=problem):
        check_mod_wsgi(module)


def test_check_mod_wsgi_accepts_the_venvs_python_and_an_unknown_one():
    check_mod_wsgi(ModWsgi((4, 7, 1), "x", python=MINE))
    check_mod_wsgi(told_mod_wsgi("4.7"))


def _daemon_lines() -> list[str]:
    with open(os.path.join(TEMPLATE_DIR, "lockllm-location.conf"), encoding="utf-8") as handle:
        text = handle.read().replace("\\\n", " ")
    return [" ".join(line.split()) for line in text.splitlines() if line.startswith("WSGIDaemonProcess")]


def test_the_two_daemon_lines_differ_in_response_flush_delay_only():
    with_delay, without = _daemon_lines()
    assert with_delay == without + " response-flush-delay=${LOCKLLM_RESPONSE_FLUSH_DELAY}"


@pytest.mark.parametrize("version, defined", [
    pytest.param("4.7", False, id="rhel9-4.7"),
    pytest.param("4.9", False, id="debian12-4.9"),
    pytest.param("5.0", False, id="ubuntu24-5.0"),
    pytest.param("6.1", True, id="pip-6.1"),
])
def test_response_flush_delay_is_defined_only_for_a_module_that_knows_it(public_config, version, defined):
    values = install_values(load_settings(public_config), "/etc/lockllm/lockllm.wsgi")
    text = server_config(values, told_mod_wsgi(version))
    assert bool(re.search(r"^Define LOCKLLM_RESPONSE_FLUSH_DELAY 0$", text, re.MULTILINE)) is defined
    assert bool(re.search(r"^# Define LOCKLLM_RESPONSE_FLUSH_DELAY 0$", text, re.MULTILINE)) is not defined
    assert "LoadModule" not in text  # the server's own module: nothing loaded twice


def test_the_venvs_module_is_loaded_without_a_server_wide_python_home(public_config, monkeypatch):
    monkeypatch.setattr(apache_config, "module_config", lambda: 'LoadModule wsgi_module "/venv/mod_wsgi.so"')
    values = install_values(load_settings(public_config), "/etc/lockllm/lockllm.wsgi")
    text = server_config(values, ModWsgi((6, 1, 1), "this venv's (pip)", 'LoadModule wsgi_module "/venv/mod_wsgi.so"'))
    assert re.search(r'^LoadModule wsgi_module "/venv/mod_wsgi.so"$', text, re.MULTILINE)
    assert "WSGIPythonHome" not in text  # server-wide: it would change every other application's Python


@pytest.mark.parametrize("layout, expected, absent", [
    pytest.param("debian", ["/etc/apache2/conf-available/lockllm.conf", "a2enconf lockllm",
                            "Define LOCKLLM_USER www-data", "Define LOCKLLM_LOG_DIR /var/log/apache2"],
                 ["semanage", "/etc/httpd"], id="debian"),
    pytest.param("rhel", ["/etc/httpd/conf.d/lockllm.conf", "Define LOCKLLM_USER apache",
                          "Define LOCKLLM_GROUP apache", "Define LOCKLLM_LOG_DIR /var/log/httpd",
                          "Define LOCKLLM_TLS_CERT /etc/pki/tls/certs/localhost.crt",
                          "setsebool -P httpd_can_network_connect 1",
                          "semanage fcontext -a -t httpd_sys_rw_content_t '/var/cache/lockllm-test(/.*)?'"],
                 ["a2enconf", "a2enmod", "www-data", "/etc/apache2"], id="rhel"),
])
def test_layouts(public_config, capsys, layout, expected, absent):
    assert cli.main(["apache-config", "--config", public_config, "--layout", layout, "--mod-wsgi-version", "4.9"]) == 0
    printed = capsys.readouterr().out
    for text in expected:
        assert text in printed
    for text in absent:
        assert text not in printed


def test_apache_config_refuses_a_module_built_for_another_python(public_config, tmp_path):
    other = "3.8" if MINE != "3.8" else "3.7"
    fake_module(str(tmp_path), "4.9.4", other)
    apachectl = fake_apachectl(str(tmp_path), " wsgi_module (shared)\\n",
                               f"LoadModule wsgi_module {tmp_path}/mod_wsgi.so", "/")
    with pytest.raises(SystemExit, match=f"embeds Python {other}, but this venv is Python {MINE}"):
        cli.main(["apache-config", "--config", public_config, "--apachectl", apachectl])
