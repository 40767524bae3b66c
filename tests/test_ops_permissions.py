"""Permissions checked as the user the daemons run as: the audit file, the metrics folder and the SQLite stores,
each problem naming the command that fixes it; `cache stats`/`clear` run as root leave the file to that user."""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import sqlite3
import subprocess
import tempfile

import pytest

from support.gateway import write_config
from lockllm_wsgi.cli import main
from lockllm_wsgi.config import load_settings
from lockllm_wsgi.permissions import Account, permission_problems

WORKER = "www-data"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="checks another user's access: needs root to set owners")


@pytest.fixture
def site(scanner, provider):
    """A folder every user can enter (pytest's tmp_path is 0700 root), and a config maker inside it."""
    root = tempfile.mkdtemp(prefix="lockllm-perm-")
    os.chmod(root, 0o755)

    def config(extra: str = "", scanner_extra: str = "") -> str:
        return write_config(pathlib.Path(root), scanner.url_for("/v1/scan"), provider.url_for("").rstrip("/"), extra,
                            scanner_extra)

    yield root, config
    shutil.rmtree(root, ignore_errors=True)


def worker_owned(path: str, mode: int = 0o700) -> str:
    os.makedirs(path, mode=mode, exist_ok=True)
    entry = pwd.getpwnam(WORKER)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def problems(config: str) -> list[str]:
    return [str(problem) for problem in permission_problems(load_settings(config), Account.named(WORKER))]


def test_worker_owned_folders_have_no_problem(site):
    root, config = site
    audit, metrics, cache = (worker_owned(os.path.join(root, name)) for name in ("audit", "metrics", "cache"))
    assert problems(config(f"[audit]\npath = {audit}/audit.log\n\n[metrics]\nmultiprocess_dir = {metrics}\n",
                           f"cache = sqlite:///{cache}/verdicts.sqlite")) == []


def test_folders_the_daemon_creates_need_a_writable_parent(site):
    root, config = site
    parent = worker_owned(os.path.join(root, "var"))
    assert problems(config(f"[metrics]\nmultiprocess_dir = {parent}/metrics\n",
                           f"cache = sqlite:///{parent}/cache/verdicts.sqlite")) == []


@pytest.mark.parametrize("setting, what", [
    pytest.param("[audit]\npath = {folder}/audit.log\n", "audit file", id="audit"),
    pytest.param("[metrics]\nmultiprocess_dir = {folder}\n", "metrics multiprocess_dir", id="metrics"),
    pytest.param("[log]\npath = {folder}/requests.log\n", "request log", id="request-log"),
    pytest.param("", "verdict cache", id="cache"),
    pytest.param("[ratelimit]\nrequests_per_minute = 60\nstore = sqlite:///{folder}/limits.sqlite\n",
                 "rate-limit store", id="ratelimit"),
])
def test_a_root_owned_folder_is_a_problem_naming_the_fix(site, setting, what):
    root, config = site
    folder = os.path.join(root, "rootonly")
    os.makedirs(folder, mode=0o755)
    cache = f"cache = sqlite:///{folder}/verdicts.sqlite" if what == "verdict cache" else ""
    found = problems(config(setting.format(folder=folder), cache))
    assert len(found) == 1 and found[0].startswith(f"{what} {folder}")
    assert f"fix: chown www-data:www-data {folder}" in found[0]


def test_a_root_owned_database_in_a_worker_folder_is_a_problem(site):
    root, config = site
    cache = worker_owned(os.path.join(root, "cache"))
    sqlite3.connect(f"{cache}/verdicts.sqlite").close()  # made by root: 0644 root
    found = problems(config("", f"cache = sqlite:///{cache}/verdicts.sqlite"))
    assert found == [f"verdict cache {cache}/verdicts.sqlite: www-data cannot write it; "
                     f"fix: chown www-data:www-data {cache}/verdicts.sqlite"]


def test_a_folder_the_worker_cannot_enter(site, tmp_path):
    _root, config = site
    found = problems(config(f"[audit]\npath = {tmp_path}/audit.log\n"))  # pytest's tmp_path: 0700 root
    assert len(found) == 1 and "www-data cannot enter" in found[0] and "chmod o+x" in found[0]


def test_an_audit_folder_that_does_not_exist(site):
    root, config = site
    found = problems(config(f"[audit]\npath = {root}/missing/audit.log\n"))
    assert found == [f"audit file {root}/missing/audit.log: its folder does not exist (the gateway does not create "
                     f"it); fix: install -d -o www-data -g www-data -m 0750 {root}/missing"]


def test_the_offline_scanner_needs_no_cache_folder(site):
    root, config = site
    path = config("", f"cache = sqlite:///{root}/rootonly/verdicts.sqlite")
    config_file = pathlib.Path(path)
    config_file.write_text(config_file.read_text().replace("api_key", "backend = offline\napi_key"))
    os.makedirs(f"{root}/rootonly", mode=0o755)
    assert problems(path) == []


def test_check_config_exits_1_naming_the_problem(site, capsys):
    root, config = site
    os.makedirs(f"{root}/rootonly", mode=0o755)
    path = config(f"[metrics]\nmultiprocess_dir = {root}/rootonly\n")
    assert main(["check-config", path, "--user", WORKER]) == 1
    err = capsys.readouterr().err
    assert f"as www-data: metrics multiprocess_dir {root}/rootonly" in err and "fix: chown" in err
    assert main(["check-config", path, "--user", "root"]) == 0


@pytest.mark.parametrize("action", ["stats", "clear"])
def test_cache_commands_run_as_root_leave_the_database_to_the_daemon(site, capsys, action):
    root, config = site
    cache = worker_owned(os.path.join(root, "cache"))
    path = config("", f"cache = sqlite:///{cache}/verdicts.sqlite")
    assert main(["cache", action, "--config", path]) == 0
    worker = pwd.getpwnam(WORKER).pw_uid
    made = [name for name in os.listdir(cache) if name.startswith("verdicts.sqlite")]
    assert "verdicts.sqlite" in made
    assert {name: os.stat(os.path.join(cache, name)).st_uid for name in made} == {name: worker for name in made}
    # And the daemon's user can open and write it.
    subprocess.run(["runuser", "-u", WORKER, "--", "python3", "-c",
                    f"import sqlite3; c = sqlite3.connect('{cache}/verdicts.sqlite'); "
                    "c.execute('PRAGMA journal_mode=WAL'); c.execute('CREATE TABLE IF NOT EXISTS t (x)'); c.commit()"],
                   check=True, capture_output=True)


def test_cache_commands_hand_a_folder_they_created_to_the_daemon(site, capsys):
    root, config = site
    parent = os.path.join(root, "var")
    os.makedirs(parent, mode=0o755)
    path = config("", f"cache = sqlite:///{parent}/cache/verdicts.sqlite")
    assert main(["cache", "stats", "--config", path]) == 0
    assert os.stat(f"{parent}/cache").st_uid == pwd.getpwnam(WORKER).pw_uid
