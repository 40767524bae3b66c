"""Whether the user the daemons run as can write where the settings say: the audit file, the metrics folder, the
SQLite verdict cache and rate-limit store. Checked by `serve` and `check-config` before anything starts, and by each
daemon as it starts, so a root-owned folder shows as one line naming the command that fixes it, not as a silent
audit gap or a cache that never opens::

    for problem in permission_problems(settings, Account.named("www-data")):
        print(problem)  # audit file /var/log/lockllm/audit.log: www-data cannot ...; fix: chown www-data:...

Mode bits, owner and groups only (as the kernel checks them without ACLs); root passes everything.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

from .config import Settings
from .stores import sqlite_path

READ, WRITE, SEARCH = 4, 2, 1


@dataclass(frozen=True)
class Account:
    name: str
    group: str
    uid: int
    gids: frozenset[int]

    @classmethod
    def named(cls, name: str) -> "Account":
        import grp

        entry = pwd.getpwnam(name)
        return cls(name, grp.getgrgid(entry.pw_gid).gr_name, entry.pw_uid,
                   frozenset(os.getgrouplist(name, entry.pw_gid)))

    @classmethod
    def current(cls) -> "Account":
        return cls.named(pwd.getpwuid(os.geteuid()).pw_name)

    def may(self, path: str, want: int) -> bool:
        """Whether this account has the `want` bits (READ, WRITE, SEARCH) on `path`: the owner's bits if it owns
        it, else the group's if it is in the group, else the others'."""
        if self.uid == 0:
            return True
        status = os.stat(path)
        if status.st_uid == self.uid:
            bits = status.st_mode >> 6
        elif status.st_gid in self.gids:
            bits = status.st_mode >> 3
        else:
            bits = status.st_mode
        return bits & want == want


@dataclass(frozen=True)
class Problem:
    what: str
    path: str
    reason: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what} {self.path}: {self.reason}; fix: {self.fix}"


def _unreachable(account: Account, path: str) -> str | None:
    """The first existing folder above `path` the account cannot enter, or None."""
    folder = os.path.dirname(os.path.abspath(path))
    folders = []
    while True:
        folders.append(folder)
        if folder == "/":
            break
        folder = os.path.dirname(folder)
    for folder in reversed(folders):
        if os.path.isdir(folder) and not account.may(folder, SEARCH):
            return folder
    return None


def _nearest_existing(path: str) -> str:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _folder_problem(account: Account, what: str, folder: str, mode: str) -> Problem | None:
    """A folder the account must create files in (creating the folder itself if it is missing)."""
    own = f"install -d -o {account.name} -g {account.group} -m {mode} {folder}"
    blocked = _unreachable(account, os.path.join(folder, "x"))
    if blocked is not None:
        return Problem(what, folder, f"{account.name} cannot enter {blocked}",
                       f"chmod o+x {blocked} (or put it elsewhere), then {own}")
    existing = _nearest_existing(folder)
    if existing != folder:
        if account.may(existing, WRITE | SEARCH):
            return None  # the daemon creates it
        return Problem(what, folder, f"missing, and {account.name} cannot create it in {existing}", own)
    if not account.may(folder, WRITE | SEARCH):
        return Problem(what, folder, f"{account.name} cannot create files in it", f"chown {account.name}:"
                       f"{account.group} {folder} && chmod {mode} {folder}")
    return None


def _file_problems(account: Account, what: str, path: str, mode: str, files: tuple[str, ...]) -> list[Problem]:
    """A file the account must read and write (created if missing), with companions such as SQLite's -wal."""
    folder_problem = _folder_problem(account, what, os.path.dirname(path), mode)
    problems = [folder_problem] if folder_problem else []
    for name in files:
        if os.path.exists(name) and not account.may(name, READ | WRITE):
            problems.append(Problem(what, name, f"{account.name} cannot write it",
                                    f"chown {account.name}:{account.group} {name}"))
    return problems


def permission_problems(settings: Settings, account: Account) -> list[Problem]:
    """Everything the daemons running as `account` will need to write and cannot."""
    problems: list[Problem] = []
    if settings.audit.path:
        path = settings.audit.path
        folder = os.path.dirname(path)
        if not os.path.isdir(folder):
            problems.append(Problem("audit file", path, "its folder does not exist (the gateway does not create it)",
                                    f"install -d -o {account.name} -g {account.group} -m 0750 {folder}"))
        else:
            problems += _file_problems(account, "audit file", path, "0750", (path,))
    if settings.log.path:
        problems += _file_problems(account, "request log", settings.log.path, "0750", (settings.log.path,))
    if settings.metrics.multiprocess_dir:
        problem = _folder_problem(account, "metrics multiprocess_dir", settings.metrics.multiprocess_dir, "0700")
        problems += [problem] if problem else []
    stores = []
    if settings.scanner.backend == "lockllm" and settings.scanner.cache_path:
        stores.append(("verdict cache", settings.scanner.cache_path))
    if settings.ratelimit.enabled and sqlite_path(settings.ratelimit.store):
        stores.append(("rate-limit store", str(sqlite_path(settings.ratelimit.store))))
    for what, path in stores:
        # SQLite creates its -wal and -shm files beside the database: the folder must be the daemon's too.
        problems += _file_problems(account, what, path, "0700", (path, path + "-wal", path + "-shm"))
    return problems


def hand_over(paths: tuple[str, ...], account: Account) -> None:
    """Give files a root-run command created or touched (a SQLite cache and its -wal/-shm) to `account`, so the
    daemons can still open them; only when running as root, only files that exist."""
    if os.geteuid() != 0 or account.uid == 0:
        return
    for path in paths:
        if os.path.exists(path):
            os.chown(path, account.uid, pwd.getpwnam(account.name).pw_gid)
