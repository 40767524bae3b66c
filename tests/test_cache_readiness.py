"""/readyz's cache check: one row read from the SQLite cache (never a count of it) or a Redis ping."""

from __future__ import annotations

import sqlite3

from lockllm_wsgi.config import ScannerSettings
from lockllm_wsgi.verdict_cache import cache_problem


def sqlite_cache(tmp_path, *statements: str) -> ScannerSettings:
    path = tmp_path / "verdicts.sqlite"
    with sqlite3.connect(path) as connection:
        for statement in statements:
            connection.execute(statement)
    connection.close()
    return ScannerSettings(cache=f"sqlite:///{path}")


def test_a_cache_with_its_table_is_ready_empty_or_full(tmp_path):
    settings = sqlite_cache(tmp_path, "CREATE TABLE responses (key TEXT PRIMARY KEY, value BLOB)")
    assert cache_problem(settings) is None
    with sqlite3.connect(settings.cache_path) as connection:
        connection.executemany("INSERT INTO responses VALUES (?, ?)", [(str(n), b"x") for n in range(100)])
    connection.close()
    assert cache_problem(settings) is None


def test_a_cache_without_its_table_is_not_ready(tmp_path):
    problem = cache_problem(sqlite_cache(tmp_path, "CREATE TABLE other (x)"))
    assert problem is not None and "no such table: responses" in problem


def test_a_missing_cache_file_is_not_ready(tmp_path):
    assert cache_problem(ScannerSettings(cache=f"sqlite:///{tmp_path}/absent.sqlite")) is not None


def test_no_cache_is_nothing_to_check():
    assert cache_problem(ScannerSettings(cache="off")) is None
