"""Changes without restarts, under real Apache: every daemon process takes an edited INI file within seconds with
no reload of Apache, and a broken edit changes nothing but is reported while readiness stays 200."""

from __future__ import annotations

import os
import pathlib
import shutil
import time

import pytest
import requests

from support.apache_servers import missing_tools, public_folder, running_apache2, running_express
from support.fakes import ATTACK
from support.gateway import write_config

MISSING = missing_tools()
pytestmark = [pytest.mark.apache, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]
# Each daemon looks at the file at most every 2 s, on a request; both daemons must have looked.
RELOAD_SECONDS = 30
# The pause between the requests that wait for both daemons to have looked: back-to-back requests only burn CPU
# the other tests of a busy machine need, and a daemon looks at most every 2 s anyway.
POLL_SECONDS = 0.05


@pytest.fixture
def folder():
    root = public_folder("lockllm-reload-")
    yield pathlib.Path(root)
    shutil.rmtree(root, ignore_errors=True)


def blocked_status(gateway) -> int:
    # A new connection each time, so every daemon process answers some.
    return requests.post(f"{gateway.base}/openai/v1/chat/completions", verify=gateway.verify, timeout=10,
                         json={"model": "m", "messages": [{"role": "user", "content": ATTACK}]}).status_code


def settled(gateway, status: int) -> bool:
    """Whether, within RELOAD_SECONDS, twenty requests in a row (both daemons) answer `status`."""
    deadline, in_a_row = time.monotonic() + RELOAD_SECONDS, 0
    while time.monotonic() < deadline and in_a_row < 20:
        in_a_row = in_a_row + 1 if blocked_status(gateway) == status else 0
        time.sleep(POLL_SECONDS)
    return in_a_row == 20


def rewrite(path: pathlib.Path, text: str) -> None:
    """Write the file anew, with a later modification time even on a file system with coarse timestamps."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


@pytest.mark.parametrize("start", [running_express, running_apache2], ids=["express", "apache2"])
def test_an_edited_ini_file_applies_in_every_daemon_and_a_broken_one_changes_nothing(folder, scanner, provider,
                                                                                      start):
    config = pathlib.Path(write_config(folder, scanner.url_for("/v1/scan"),
                                       provider.url_for("").rstrip("/")))
    with start(str(config), str(folder)) as gateway:
        assert blocked_status(gateway) == 400
        good = config.read_text() + "\n[policy]\nblock_status = 422\n"
        rewrite(config, good)
        assert settled(gateway, 422)  # no Apache reload: the daemons took it themselves
        rewrite(config, good.replace("block_status = 422", "block_status = soon"))
        deadline, ready = time.monotonic() + RELOAD_SECONDS, None
        while time.monotonic() < deadline:
            assert blocked_status(gateway) == 422  # traffic goes on with the last good settings
            ready = requests.get(f"{gateway.base}/readyz", verify=gateway.verify, timeout=10)
            if "last change not applied" in ready.json()["checks"]["config"]:
                break
            time.sleep(POLL_SECONDS)
        assert ready is not None and "block_status" in ready.json()["checks"]["config"]
        assert ready.status_code == 200  # one bad edit must not take a fleet out of its load balancer
