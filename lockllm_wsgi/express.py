"""The mod_wsgi-express command line that `lockllm-wsgi serve` runs, with the same settings as the shipped snippets.

    command = express_command(settings, "/etc/lockllm/lockllm.ini", host="127.0.0.1", port=8000)
    os.execv(command[0], command)

Started as root, Apache's workers run as www-data (or the user named by LOCKLLM_WSGI_USER), who must be able
to read this Python, the package and the config file; the command says so up front rather than failing later
with an import error in Apache's log. Started as a normal user, everything runs as that user.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import sys

from .apache_config import (DEFAULT_PROCESSES, DEFAULT_THREADS, DEFAULT_WORKER_USER, RESPONSE_FLUSH_DELAY_MS,
                            install_values, write_script)
from .config import Settings
from .permissions import Account, permission_problems


def _readable_by(user: str, path: str) -> bool:
    """Whether `user` can read `path` and search every folder above it (approximated by the other/owner bits)."""
    entry = pwd.getpwnam(user)
    current = os.path.abspath(path)
    while True:
        try:
            status = os.stat(current)
        except OSError:
            return False
        need = 0o4 if current == os.path.abspath(path) else 0o1
        if not (status.st_mode & need or (status.st_uid == entry.pw_uid and status.st_mode & (need << 6))
                or (status.st_gid == entry.pw_gid and status.st_mode & (need << 3))):
            return False
        if current == "/":
            return True
        current = os.path.dirname(current)


def file_behind(fd: int) -> str | None:
    """The path of the regular file `fd` writes to (`serve >> gateway.log`, systemd's `append:`), or None for a
    terminal, a pipe, the journal's socket, or a file no longer reachable by its name."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        path = os.readlink(f"/proc/self/fd/{fd}")
        held, named = os.fstat(fd), os.stat(path)
    except OSError:
        return None
    return path if (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino) else None


def log_options(log_file: str | None) -> list[str]:
    """Where Apache writes its error log, which carries the gateway's request log.

    mod_wsgi-express's --log-to-terminal first checks /dev/stderr by opening it for writing, which truncates a
    regular file: `serve >> gateway.log` would lose every earlier line at each start. A log file is given to
    Apache as its ErrorLog instead, which Apache opens for appending; a terminal or a pipe keeps --log-to-terminal.
    """
    if not log_file:
        return ["--log-to-terminal"]
    log_file = os.path.abspath(log_file)
    return ["--log-directory", os.path.dirname(log_file), "--error-log-name", os.path.basename(log_file)]


EXPRESS_INCLUDE = """\
# Written by `lockllm-wsgi serve`: what lockllm-location.conf adds to a vhost, at mod_wsgi-express's server level.
Define LOCKLLM_APACHE_DIR {apache_dir}
Include {apache_dir}/lockllm-error-documents.conf
Include {apache_dir}/lockllm-errors.conf
# Chunked bodies are capped by the app, which answers 413 in the route's shape (lockllm-location.conf says why).
<If "-z req('Content-Length')">
    LimitRequestBody 0
</If>
"""


def write_include(path: str, apache_dir: str) -> str:
    """The server-level file mod_wsgi-express Includes (--include-file), for the shipped snippets in `apache_dir`."""
    if any(char.isspace() for char in apache_dir):
        raise SystemExit(f"lockllm-wsgi: Apache cannot Include from a path with spaces: {apache_dir}")
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(EXPRESS_INCLUDE.format(apache_dir=apache_dir))
    os.chmod(path, 0o644)
    return path


def express_command(settings: Settings, config_path: str, host: str, port: int, processes: int = DEFAULT_PROCESSES,
                    threads: int = DEFAULT_THREADS, server_root: str | None = None,
                    log_file: str | None = None) -> list[str]:
    """The command line; `log_file` (appended to) instead of the terminal for Apache's error log."""
    express = shutil.which("mod_wsgi-express", path=os.path.dirname(sys.executable)) or shutil.which("mod_wsgi-express")
    if not express:
        raise SystemExit("lockllm-wsgi: mod_wsgi-express is not installed; pip install 'lockllm-wsgi[apache]' "
                         "(needs Debian's apache2 and apache2-dev)")
    server_root = server_root or f"/tmp/lockllm-wsgi-{port}"
    script = write_script(os.path.join(server_root, "lockllm.wsgi"), config_path)
    user = os.environ.get("LOCKLLM_WSGI_USER", DEFAULT_WORKER_USER)
    values = install_values(settings, script, processes=processes, threads=threads, user=user)
    command = [
        express, "start-server", script,
        "--server-root", server_root,
        # The daemon's working directory: the caller's (often /root) may be unreadable to the worker user.
        "--working-directory", server_root,
        # Where lockllm_wsgi lives, so a source checkout runs as installed.
        "--python-path", values["LOCKLLM_CODE"],
        "--host", host, "--port", str(port),
        "--processes", values["LOCKLLM_PROCESSES"], "--threads", values["LOCKLLM_THREADS"],
        # Apache's own front threads, each held by a request for its whole life (a scan, then the provider's
        # answer): express starts a fifth of them and Apache forks more at most once a second, so a burst after
        # start or a quiet spell queued in front of idle daemons (50 clients at once on a fresh server: p50 2.1-2.3
        # scan round trips, 1.4 with every thread started; docs/benchmarks.md, round seven). All start, and stay.
        "--initial-workers", "1", "--minimum-spare-workers", "1", "--maximum-spare-workers", "1",
        # A long generation keeps a request open for minutes: neither Apache nor the daemon may cut it first.
        "--socket-timeout", values["LOCKLLM_SOCKET_TIMEOUT"], "--request-timeout", values["LOCKLLM_REQUEST_TIMEOUT"],
        "--limit-request-body", values["LOCKLLM_MAX_BODY"],
        # Streamed events go to the client as soon as the daemon yields them, not 5 ms later (apache_config.py).
        "--response-flush-delay", str(RESPONSE_FLUSH_DELAY_MS),
        # Apache's own 413/502/503 as JSON the client's SDK can read, and chunked bodies capped by the app, as in
        # the shipped location snippet.
        "--include-file", write_include(os.path.join(server_root, "lockllm-express.conf"), values["LOCKLLM_APACHE_DIR"]),
        "--chunked-request",  # coding agents send chunked bodies; the gateway reads them to the end, capped
        "--locale", "C.UTF-8",  # present on every Debian system, unlike the en_US.UTF-8 express asks for
        *log_options(log_file),
    ]
    if os.geteuid() == 0:
        for what, path in (("Python", sys.executable), ("configuration", config_path),
                           ("package", os.path.join(values["LOCKLLM_CODE"], "lockllm_wsgi"))):
            if not _readable_by(user, path):
                raise SystemExit(f"lockllm-wsgi: Apache's workers run as {user}, who cannot read the {what} at "
                                 f"{path}; use a venv made from /usr/bin/python3 outside /root and a readable config")
        command += ["--user", user, "--group", grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name]
    problems = permission_problems(settings, Account.named(user) if os.geteuid() == 0 else Account.current())
    if problems:
        raise SystemExit("lockllm-wsgi: the daemons cannot write where the settings say:\n"
                         + "\n".join(f"  {problem}" for problem in problems))
    return command
