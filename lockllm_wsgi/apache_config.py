"""The Apache settings of one installation: the shipped snippets' Defines filled in from the INI file and this venv.

The snippets in apache/ (installed as lockllm_wsgi/apache/) are used unchanged; only lockllm-defines.conf is
printed with this installation's values, for the mod_wsgi the server already loads (a distribution's 4.7 or later,
found with `apachectl -M` and the module file) or, on a server that loads none, the venv's own; and the `.wsgi`
script is written from its template::

    values = install_values(load_settings("/etc/lockllm/lockllm.ini"), "/etc/lockllm/lockllm.wsgi")
    print(server_config(values, loaded_mod_wsgi("apache2ctl") or venv_mod_wsgi()))

`lockllm-wsgi serve` (express.py) builds mod_wsgi-express's options from the same `install_values`, so both ways of
running under Apache share one set of limits and timeouts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
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
# mod_wsgi 6.1 and later hold a stalled daemon response for this many milliseconds before flushing it to the
# client (default 5, meant for pacing filters such as mod_ratelimit, which we do not use): every streamed event,
# the first one included, would wait 5 ms plus a scheduling round (+7 ms to the first chunk in
# benchmarks/streaming.py). 0 flushes as soon as the daemon has nothing more to give. lockllm-location.conf sets
# the same value.
RESPONSE_FLUSH_DELAY_MS = 0
# The first mod_wsgi release that knows response-flush-delay. Older ones (Debian 12's 4.9.4, RHEL 9's 4.7.1,
# Ubuntu 24.04's 5.0.0) refuse the option, and need none: their transfer loop flushes as soon as a read from the
# daemon would block (read in their sources; benchmarks/flush_delay.py measures 4.9.4 against 6.1).
RESPONSE_FLUSH_DELAY_SINCE = (6, 1)
# The oldest mod_wsgi whose options the snippets were checked against (RHEL 9's python3-mod_wsgi 4.7.1: every
# WSGIDaemonProcess option and directive the snippets use but response-flush-delay, read in its sources).
OLDEST_MOD_WSGI = (4, 7)
DEFAULT_PREFIX = "/llm"
DEFAULT_PROCESSES = 2
DEFAULT_THREADS = 15
DEFAULT_WORKER_USER = "www-data"


@dataclass(frozen=True)
class Layout:
    """Where a distribution's Apache keeps things, and the defaults that follow for the example site."""

    conf_file: str  # where the printed server-level file goes
    enable: str  # what turns it on after saving it
    user: str  # Apache's own user, which the daemon runs as by default
    log_dir: str
    tls_cert: str  # the throwaway pair the distribution makes, to replace with a real certificate
    tls_key: str
    apachectl: str


LAYOUTS = {
    "debian": Layout("/etc/apache2/conf-available/lockllm.conf", "a2enconf lockllm && a2enmod ssl alias env",
                     "www-data", "/var/log/apache2", "/etc/ssl/certs/ssl-cert-snakeoil.pem",
                     "/etc/ssl/private/ssl-cert-snakeoil.key", "apache2ctl"),
    # RHEL, Rocky, Alma, CentOS Stream, Fedora: one file in conf.d (read by httpd.conf's IncludeOptional), no
    # a2enconf; mod_alias and mod_env are loaded by conf.modules.d/00-base.conf, mod_ssl comes with its package.
    "rhel": Layout("/etc/httpd/conf.d/lockllm.conf", "dnf install mod_ssl; apachectl -t && systemctl reload httpd",
                   "apache", "/var/log/httpd", "/etc/pki/tls/certs/localhost.crt",
                   "/etc/pki/tls/private/localhost.key", "apachectl"),
}


def default_layout() -> str:
    """rhel where /etc/httpd exists and /etc/apache2 does not, else debian."""
    return "rhel" if os.path.isdir("/etc/httpd") and not os.path.isdir("/etc/apache2") else "debian"


@dataclass(frozen=True)
class ModWsgi:
    """The mod_wsgi Apache runs the gateway with: its version decides which options the printed file may use."""

    version: tuple[int, ...]
    source: str  # where it comes from, for the printed file: "loaded by the server from ...", "this venv's"
    load_module: str | None = None  # the LoadModule line to print; None when the server loads it already
    python: str | None = None  # "3.11": the Python it was built for, where known

    @property
    def version_text(self) -> str:
        return ".".join(str(part) for part in self.version)

    @property
    def knows_response_flush_delay(self) -> bool:
        return self.version[:2] >= RESPONSE_FLUSH_DELAY_SINCE


def parse_version(text: str) -> tuple[int, ...]:
    """'4.9' or '4.9.4' -> (4, 9) or (4, 9, 4); anything else is a ValueError naming the text."""
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?", text.strip()):
        raise ValueError(f"a mod_wsgi version is X.Y or X.Y.Z, such as 4.9, not {text!r}")
    return tuple(int(part) for part in text.strip().split("."))


def told_mod_wsgi(version: str) -> ModWsgi:
    """The mod_wsgi the operator says the server loads (`--mod-wsgi-version`): nothing is probed or loaded."""
    return ModWsgi(parse_version(version), "loaded by the server (version as given with --mod-wsgi-version)")


def venv_mod_wsgi() -> ModWsgi:
    """The venv's own mod_wsgi (pip's), loaded by the printed LoadModule line."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("mod_wsgi")
    except PackageNotFoundError:
        raise SystemExit("lockllm-wsgi: the server loads no mod_wsgi and this venv has none: install the "
                         "distribution's (Debian: apt-get install libapache2-mod-wsgi-py3 && a2enmod wsgi), or "
                         "pip install 'lockllm-wsgi[apache]' (needs apache2-dev)") from None
    return ModWsgi(parse_version(release), "this venv's (pip)", load_module=module_config(),
                   python=f"{sys.version_info[0]}.{sys.version_info[1]}")


def module_file_facts(path: str) -> tuple[tuple[int, ...] | None, str | None]:
    """The mod_wsgi release and the Python a module file was built for, read from its bytes: the release string
    mod_wsgi compiles in ("4.9.4"; Python's own is 3.x) and the libpython it links ("libpython3.11.so.1.0")."""
    with open(path, "rb") as handle:
        data = handle.read()
    releases = {match[1].decode() for match in re.finditer(rb"\x00([4-9]\.\d{1,2}\.\d{1,2})\x00", data)}
    python = re.search(rb"libpython(3\.\d+)", data)
    release = parse_version(releases.pop()) if len(releases) == 1 else None
    return release, python[1].decode() if python else None


def _apachectl_output(apachectl: str, *arguments: str) -> str:
    command = apachectl.split() + list(arguments)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except OSError as error:
        raise SystemExit(f"lockllm-wsgi: cannot run {command[0]} to see which mod_wsgi Apache loads ({error}); "
                         "name it with --apachectl, or say --mod-wsgi-version X.Y") from None
    if done.returncode != 0:
        raise SystemExit(f"lockllm-wsgi: {' '.join(command)} failed ({done.stderr.strip()[-300:]}); fix the "
                         "server's configuration, or say --mod-wsgi-version X.Y")
    return done.stdout


def loaded_mod_wsgi(apachectl: str) -> ModWsgi | None:
    """The mod_wsgi the server's configuration loads (`apachectl -M`), its file found through the configuration's
    LoadModule line; None when it loads none. A module whose release cannot be read stops with a message asking
    for --mod-wsgi-version."""
    if not re.search(r"^\s*wsgi_module\b", _apachectl_output(apachectl, "-M"), re.MULTILINE):
        return None
    run_config = _apachectl_output(apachectl, "-t", "-D", "DUMP_RUN_CFG")
    root = re.search(r'^ServerRoot: "(.*)"', run_config, re.MULTILINE)
    includes = re.findall(r"^\s*\(\S+\) (/\S+)$", _apachectl_output(apachectl, "-t", "-D", "DUMP_INCLUDES"),
                          re.MULTILINE)
    for included in includes:
        with open(included, encoding="utf-8", errors="replace") as handle:
            found = re.search(r"^\s*LoadModule\s+wsgi_module\s+\"?([^\s\"]+)", handle.read(), re.MULTILINE)
        if found:
            path = os.path.join(root[1] if root else "/", found[1])
            if os.path.realpath(path).startswith(os.path.realpath(sys.prefix) + os.sep):
                # This venv's own module, loaded by an earlier printed file: printed again, LoadModule included,
                # since the new file replaces the old one.
                return venv_mod_wsgi()
            release, python = module_file_facts(path)
            if release is None:
                break
            return ModWsgi(release, f"loaded by the server from {path}", python=python)
    raise SystemExit("lockllm-wsgi: the server loads mod_wsgi, but its release could not be read from the module "
                     "file; say which with --mod-wsgi-version X.Y")


def check_mod_wsgi(module: ModWsgi) -> None:
    """Refuse a mod_wsgi older than the snippets were checked against, or built for another Python than this
    venv's (python-home must be a venv of the very Python the module embeds)."""
    if module.version[:2] < OLDEST_MOD_WSGI:
        raise SystemExit(f"lockllm-wsgi: mod_wsgi {module.version_text} ({module.source}) is older than "
                         f"{'.'.join(map(str, OLDEST_MOD_WSGI))}, the oldest the snippets were checked against")
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if module.python and module.python != mine:
        raise SystemExit(f"lockllm-wsgi: mod_wsgi {module.version_text} ({module.source}) embeds Python "
                         f"{module.python}, but this venv is Python {mine}: make the venv from /usr/bin/python"
                         f"{module.python} and install lockllm-wsgi into it")


_DEFINE_LINE = re.compile(r"^Define (LOCKLLM_[A-Z_]+) .*$", re.MULTILINE)
_CONFIG_LINE = re.compile(r"^CONFIG = .*$", re.MULTILINE)


def code_dir() -> str:
    """The folder holding the lockllm_wsgi package: site-packages, or a source checkout run in place."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def install_values(settings: Settings, wsgi_script: str, prefix: str = DEFAULT_PREFIX,
                   processes: int = DEFAULT_PROCESSES, threads: int = DEFAULT_THREADS,
                   user: str | None = None, group: str | None = None, layout: str = "debian") -> dict[str, str]:
    """The Define values that follow from the INI file, from where this Python and package live, and from the
    distribution's layout (its Apache user, log folder and throwaway certificate)."""
    where = LAYOUTS[layout]
    user = user or where.user
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
        "LOCKLLM_RESPONSE_FLUSH_DELAY": str(RESPONSE_FLUSH_DELAY_MS),
        "LOCKLLM_MAX_BODY": str(settings.limits.max_body_bytes + BODY_LIMIT_MARGIN_BYTES),
        "LOCKLLM_APACHE_DIR": TEMPLATE_DIR,
        "LOCKLLM_LOG_DIR": where.log_dir,
        "LOCKLLM_TLS_CERT": where.tls_cert,
        "LOCKLLM_TLS_KEY": where.tls_key,
    }


def _template(name: str) -> str:
    with open(os.path.join(TEMPLATE_DIR, name), encoding="utf-8") as handle:
        return handle.read()


def render_defines(values: Mapping[str, str], leave_out: Mapping[str, str] | None = None) -> str:
    """lockllm-defines.conf with `values` in place of the shipped examples; an unknown name is an error. Each
    Define named in `leave_out` is printed commented out, followed by the reason given."""
    text = _template(DEFINES_FILE)
    known = set(_DEFINE_LINE.findall(text))
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{', '.join(unknown)} is not defined in {DEFINES_FILE} (known: {', '.join(sorted(known))})")
    for name, value in values.items():
        if not value or any(char.isspace() for char in value):
            # A Define value ends at the first space; a path with spaces would silently become another path.
            raise ValueError(f"{name} must be one word without spaces, not {value!r}")
    text = _DEFINE_LINE.sub(lambda match: f"Define {match[1]} {values.get(match[1], match[0].split(' ', 2)[2])}",
                            text)
    for name, reason in (leave_out or {}).items():
        text = re.sub(rf"^Define {name} .*$", lambda match, why=reason: f"# {match[0]}\n# {why}", text,
                      flags=re.MULTILINE)
    return text


def _selinux_notes(settings: Settings | None) -> list[str]:
    """RHEL-family hosts enforce SELinux: what the gateway needs beyond a plain web application."""
    folders = sorted({os.path.dirname(path) for path in (
        settings.scanner.cache_path if settings else None, settings.audit.path if settings else None,
        (settings.metrics.multiprocess_dir + "/x") if settings and settings.metrics.multiprocess_dir else None,
    ) if path}) or ["/var/cache/lockllm"]
    lines = ["#", "# SELinux (enforcing by default on RHEL): the daemon runs as httpd_t.",
             "#   setsebool -P httpd_can_network_connect 1   # reach LockLLM, the providers and Redis"]
    for folder in folders:
        lines.append(f"#   semanage fcontext -a -t httpd_sys_rw_content_t '{folder}(/.*)?' && restorecon -Rv {folder}")
    lines.append("# and, unless another file sets it (the default under logs/ is refused by SELinux):")
    lines.append("#   WSGISocketPrefix /run/httpd/wsgi")
    return lines


def server_config(values: Mapping[str, str], module: ModWsgi | None = None, layout: str = "debian",
                  settings: Settings | None = None) -> str:
    """The server-level file for this installation: the mod_wsgi line when the server loads none, then the Defines,
    leaving out options `module` does not know; the snippets are Included as is. Without `module`, the venv's own
    mod_wsgi is loaded (a server running no other mod_wsgi application)."""
    module = module or venv_mod_wsgi()
    where = LAYOUTS[layout]
    lines = [
        f"# lockllm-wsgi for this installation, printed by `lockllm-wsgi apache-config --layout {layout}`. Save it as",
        f"# {where.conf_file} and turn it on: {where.enable}",
        "# Then Include one of these, which use the Defines below unchanged:",
        f"#   inside your HTTPS <VirtualHost>:  Include {TEMPLATE_DIR}/lockllm-location.conf",
        f"#   or, as a whole site:             Include {TEMPLATE_DIR}/lockllm-vhost.conf",
    ]
    if layout == "rhel":
        lines += ["# (conf.d files are read in name order: the file holding your vhost, e.g. ssl.conf, must sort",
                  "# after this one, or Include the snippet from this file's end.)"]
        lines += _selinux_notes(settings)
    lines += ["", f"# mod_wsgi {module.version_text}, {module.source}"
              + (f", built for Python {module.python} (this venv's)." if module.python else "."),
              "# python-home below must be a venv of the Python this mod_wsgi was built for."]
    if module.load_module:
        lines += ["# The server loads no mod_wsgi: this loads the venv's. One Apache loads one mod_wsgi; were",
                  "# another enabled later (a2enmod wsgi), the first LoadModule read wins.", module.load_module]
    else:
        lines += ["# The server's own mod_wsgi runs the gateway in a daemon group of its own; nothing else changes."]
    leave_out = {}
    if not module.knows_response_flush_delay:
        leave_out["LOCKLLM_RESPONSE_FLUSH_DELAY"] = (
            f"mod_wsgi {module.version_text} does not know response-flush-delay, and needs none: before 6.1 a\n"
            "# stalled response is flushed at once (benchmarks/flush_delay.py: 0.2 ms p50 per event with Debian's\n"
            "# 4.9.4, as with 6.1 told 0; 6.1 at its default holds each 5.4 ms).")
    lines += ["", render_defines(values, leave_out)]
    return "\n".join(lines)


def module_config() -> str:
    """The LoadModule line for the venv's mod_wsgi, as `mod_wsgi-express module-config` prints it."""
    express = shutil.which("mod_wsgi-express", path=os.path.dirname(sys.executable)) or shutil.which("mod_wsgi-express")
    if not express:
        raise SystemExit("lockllm-wsgi: mod_wsgi-express is not installed; pip install 'lockllm-wsgi[apache]' "
                         "(needs Debian's apache2 and apache2-dev)")
    lines = subprocess.run([express, "module-config"], check=True, capture_output=True, text=True).stdout
    # Only the LoadModule line: module-config also prints a WSGIPythonHome for the venv, which is server-wide and
    # would change every other mod_wsgi application's interpreter; the gateway's daemon sets python-home itself.
    return "\n".join(line for line in lines.splitlines() if line.startswith("LoadModule"))


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
