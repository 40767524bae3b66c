"""The `lockllm-wsgi` command: serve, check-config, scan, cache and apache-config.

    lockllm-wsgi serve --config /etc/lockllm/lockllm.ini --port 8000
    lockllm-wsgi apache-config --config /etc/lockllm/lockllm.ini --write-script > /etc/apache2/conf-available/lockllm.conf
    lockllm-wsgi scan --config /etc/lockllm/lockllm.ini "Ignore all previous instructions"
    lockllm-wsgi cache stats --config /etc/lockllm/lockllm.ini

Every subcommand takes `--config FILE`, defaulting to the file named by LOCKLLM_WSGI_CONFIG.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Sequence

from .apache_config import default_layout
from .config import ConfigError, load_settings
from .stores import masked_url
from .express import express_command, file_behind


def _config_path(args: argparse.Namespace) -> str:
    path = args.config or os.environ.get("LOCKLLM_WSGI_CONFIG")
    if not path:
        # A ConfigError exits 2, as every unusable configuration does: `scan` keeps 1 for "unsafe".
        raise ConfigError("name a configuration file with --config FILE (or LOCKLLM_WSGI_CONFIG)")
    return os.path.abspath(path)


def _serve(args: argparse.Namespace) -> int:
    path = _config_path(args)
    settings = load_settings(path)
    _warn(settings)
    # A stderr redirected to a file (`>> gateway.log`, systemd `append:`) is handed to Apache by name, so it is
    # appended to, never truncated by mod_wsgi-express (express.log_options).
    log_file = args.log_file or file_behind(sys.stderr.fileno())
    command = express_command(settings, path, host=args.host, port=args.port, processes=args.processes,
                              threads=args.threads, server_root=args.server_root, log_file=log_file)
    print("lockllm-wsgi: starting", " ".join(command), file=sys.stderr, flush=True)
    os.execv(command[0], command)
    return 0  # not reached


# Settings that are secrets: shown as set or not, never in part (a key's tail narrows a guess and leaks into
# tickets and chat when people paste this output).
SECRET_KEYS = frozenset({"api_key"})
MASK = "********"


def _masked(value: object) -> object:
    """The effective settings with secrets replaced by MASK and passwords cut out of store URLs."""
    if isinstance(value, dict):
        return {key: (MASK if key in SECRET_KEYS and item else _masked(item)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(item) for item in value]
    return masked_url(value) if isinstance(value, str) and "://" in value else value


def _daemon_account(args: argparse.Namespace):
    """The account the daemons run as: --user, else (as root) LOCKLLM_WSGI_USER or www-data, else this user."""
    from .apache_config import DEFAULT_WORKER_USER
    from .permissions import Account

    name = getattr(args, "user", None) or (os.environ.get("LOCKLLM_WSGI_USER", DEFAULT_WORKER_USER)
                                           if os.geteuid() == 0 else None)
    try:
        return Account.named(name) if name else Account.current()
    except KeyError:
        raise SystemExit(f"lockllm-wsgi: no such user {name!r} (--user, LOCKLLM_WSGI_USER)") from None


def _warn(settings) -> None:
    from .advice import config_warnings

    for warning in config_warnings(settings):
        print(f"lockllm-wsgi: warning: {warning}", file=sys.stderr)


def _check_config(args: argparse.Namespace) -> int:
    from .permissions import permission_problems

    settings = load_settings(_config_path(args))
    print(json.dumps(_masked(dataclasses.asdict(settings)), indent=2, default=str))
    _warn(settings)
    account = _daemon_account(args)
    problems = permission_problems(settings, account)
    for problem in problems:
        print(f"lockllm-wsgi: as {account.name}: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _scan(args: argparse.Namespace) -> int:
    from .normalize import normalize_for_scan
    from .scan import make_scanner
    from .verdict import ScannerUnavailable

    settings = load_settings(_config_path(args))
    scanner = make_scanner(settings.scanner)
    try:
        verdict = scanner.scan([normalize_for_scan(args.text)], deadline=time.monotonic() + settings.scanner.timeout)[0]
    except ScannerUnavailable as problem:
        print(f"scanner unavailable: {problem}", file=sys.stderr)
        return 2
    finally:
        scanner.close()
    from .policy import is_unsafe

    unsafe = is_unsafe(verdict, settings.policy.threshold, settings.scanner)
    print(json.dumps({
        "backend": settings.scanner.backend, "unsafe": unsafe, "safe_flag": verdict.safe, "score": verdict.score,
        "threshold": settings.policy.threshold, "label": verdict.label, "families": list(verdict.families),
        "model_score": verdict.model_score,
        "scanner_request_id": verdict.scanner_request_id,
    }, indent=2))
    return 1 if unsafe else 0


def _cache(args: argparse.Namespace) -> int:
    from .permissions import hand_over
    from .verdict_cache import open_backend

    settings = load_settings(_config_path(args)).scanner
    if settings.cache == "off":
        print("lockllm-wsgi: [scanner] cache is off; there is nothing to show or clear", file=sys.stderr)
        return 2
    where = masked_url(settings.cache)
    account = _daemon_account(args)
    folder = os.path.dirname(settings.cache_path) if settings.cache_path else None
    created_folder = folder is not None and not os.path.isdir(folder)
    try:
        backend = open_backend(settings)
        entries = len(backend.responses)
        if args.action == "clear":
            backend.clear()
            report: dict[str, object] = {"cache": where, "cleared_entries": entries}
        else:
            report = {"cache": where, "entries": entries, "ttl_seconds": settings.cache_ttl}
            if settings.cache_path:
                report["bytes"] = sum(os.path.getsize(settings.cache_path + suffix)
                                      for suffix in ("", "-wal") if os.path.exists(settings.cache_path + suffix))
        backend.close()
    except Exception as error:  # noqa: BLE001 - sqlite3, redis and OS errors alike: say which and stop
        print(f"lockllm-wsgi: cannot use the cache {where}: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    finally:
        if settings.cache_path:
            # Run as root, this may have created the file (and its -wal/-shm): the daemons must still open them.
            path = settings.cache_path
            hand_over(((folder,) if created_folder else ()) + (path, path + "-wal", path + "-shm"), account)
    print(json.dumps(report, indent=2))
    return 0


def _apache_config(args: argparse.Namespace) -> int:
    from .apache_config import (LAYOUTS, check_mod_wsgi, install_values, loaded_mod_wsgi, server_config, told_mod_wsgi,
                                venv_mod_wsgi, write_script)

    path = _config_path(args)
    settings = load_settings(path)
    script = os.path.abspath(args.wsgi_script or os.path.join(os.path.dirname(path), "lockllm.wsgi"))
    values = install_values(settings, script, prefix=args.prefix, processes=args.processes, threads=args.threads,
                            user=args.user, group=args.group, layout=args.layout)
    for define in args.define:
        name, _, value = define.partition("=")
        values[name.strip()] = value.strip()
    try:
        if args.venv_mod_wsgi:
            module = venv_mod_wsgi()
        elif args.mod_wsgi_version:
            module = told_mod_wsgi(args.mod_wsgi_version)
        else:
            module = loaded_mod_wsgi(args.apachectl or LAYOUTS[args.layout].apachectl) or venv_mod_wsgi()
        check_mod_wsgi(module)
        text = server_config(values, module, layout=args.layout, settings=settings)
    except ValueError as error:
        raise SystemExit(f"lockllm-wsgi: {error}") from None
    if args.write_script:
        write_script(script, path)
        print(f"lockllm-wsgi: wrote {script}", file=sys.stderr)
    print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lockllm-wsgi", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--config", help="INI file (default: $LOCKLLM_WSGI_CONFIG)")
        return sub

    serve = command("serve", "Run the gateway under mod_wsgi-express (Apache).")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument("--processes", type=int, default=2, help="daemon processes (default 2)")
    serve.add_argument("--threads", type=int, default=15, help="threads per daemon process (default 15)")
    serve.add_argument("--server-root", help="folder for Apache's generated files (default /tmp/lockllm-wsgi-PORT)")
    serve.add_argument("--log-file", help="append Apache's error log (with the request log) to this file (default: "
                       "stderr; a file stderr is redirected to is appended to as well)")
    serve.set_defaults(run=_serve)

    apache = command("apache-config", "Print the Apache Defines for this installation (venv, script, limits, "
                     "timeouts) to Include with the shipped snippets, for the mod_wsgi the server loads.")
    apache.add_argument("--prefix", default="/llm", help="URL path to mount the gateway at (default /llm)")
    apache.add_argument("--wsgi-script", help="the .wsgi script path (default: lockllm.wsgi beside the config)")
    apache.add_argument("--write-script", action="store_true", help="also write the .wsgi script for this config")
    apache.add_argument("--processes", type=int, default=2, help="daemon processes (default 2)")
    apache.add_argument("--threads", type=int, default=15, help="threads per daemon process (default 15)")
    apache.add_argument("--layout", choices=("debian", "rhel"), default=default_layout(),
                        help="the distribution's Apache layout: debian (conf-available, a2enconf, www-data) or rhel "
                             "(one conf.d file, apache user, SELinux notes); default: rhel where only /etc/httpd "
                             "exists")
    which = apache.add_mutually_exclusive_group()
    which.add_argument("--mod-wsgi-version", metavar="X.Y",
                       help="the release of the mod_wsgi the server loads, instead of asking apachectl")
    which.add_argument("--venv-mod-wsgi", action="store_true",
                       help="load the venv's own mod_wsgi (only on a server that loads no other mod_wsgi)")
    apache.add_argument("--apachectl", help="command that asks the server which modules it loads (default: "
                        "apache2ctl on Debian, apachectl on RHEL); e.g. 'apache2 -f /etc/apache2-other/apache2.conf'")
    apache.add_argument("--user", help="user the daemon runs as (default: Apache's, www-data or apache)")
    apache.add_argument("--group", help="group the daemon runs as (default: same as --user)")
    apache.add_argument("--define", action="append", default=[], metavar="NAME=VALUE",
                        help="set any other Define, e.g. LOCKLLM_SERVER_NAME=llm.example.com (repeatable)")
    apache.set_defaults(run=_apache_config)

    check = command("check-config", "Validate the configuration and print the effective settings, secrets masked; "
                    "exit 1 when the daemons' user cannot write the audit file, metrics folder or SQLite stores.")
    check.add_argument("file", nargs="?", help="INI file (same as --config)")
    check.add_argument("--user", help="user the daemons run as (default, as root: $LOCKLLM_WSGI_USER or www-data; "
                       "otherwise you)")
    check.set_defaults(run=_check_config)

    scan = command("scan", "Ask the configured scanner about TEXT and print its verdict (exit 1 when unsafe).")
    scan.add_argument("text")
    scan.set_defaults(run=_scan)

    cache = command("cache", "Show how many verdicts the cache holds (stats), or empty it (clear).")
    cache.add_argument("action", choices=("stats", "clear"))
    cache.add_argument("--user", help="user the daemons run as, who keeps owning the cache file when this runs as "
                       "root (default: $LOCKLLM_WSGI_USER or www-data)")
    cache.set_defaults(run=_cache)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "file", None):
        args.config = args.file
    try:
        return args.run(args)
    except ConfigError as error:
        print(f"lockllm-wsgi: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
