"""`lockllm-wsgi serve`'s log destination: a file stderr is redirected to is appended to by Apache, never opened
for writing by mod_wsgi-express (which truncates it); a terminal or a pipe stays a terminal."""

from __future__ import annotations

import os

import pytest

from lockllm_wsgi.express import file_behind, log_options


def test_a_regular_file_is_found_by_name(tmp_path):
    path = tmp_path / "gateway.log"
    with open(path, "ab") as handle:
        assert file_behind(handle.fileno()) == str(path)


def test_a_pipe_is_not_a_file():
    read_end, write_end = os.pipe()
    try:
        assert file_behind(write_end) is None
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_deleted_file_is_not_named(tmp_path):
    path = tmp_path / "rotated.log"
    with open(path, "ab") as handle:
        path.unlink()
        assert file_behind(handle.fileno()) is None


@pytest.mark.parametrize("log_file, expected", [
    pytest.param(None, ["--log-to-terminal"], id="terminal"),
    pytest.param("/var/log/lockllm/gateway.log",
                 ["--log-directory", "/var/log/lockllm", "--error-log-name", "gateway.log"], id="file"),
])
def test_log_options(log_file, expected):
    assert log_options(log_file) == expected
