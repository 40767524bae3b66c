"""Where the test suite's CPU goes: a pytest plugin that prints the CPU seconds each test file used.

The suite is bound by CPU on two cores, so its wall time cannot drop below its CPU seconds over the cores; this
table says which files those seconds belong to. Run it in one process (with pytest-xdist each worker would print
its own share), from the checkout's top folder::

    python -m pytest -n 0 -p benchmarks.suite_cpu

A file's seconds are its tests' and fixtures', its own process and every child it waited for (the Apache servers
its fixtures started and stopped, forks, subprocesses); collection (importing every test module and the SDKs they
import) is the difference between the files' sum and the total.
"""

from __future__ import annotations

import collections
import resource

import pytest

_seconds_by_file: collections.Counter[str] = collections.Counter()


def _cpu_seconds() -> float:
    """User and system time of this process and of the children it has waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    started = _cpu_seconds()
    yield
    _seconds_by_file[item.location[0]] += _cpu_seconds() - started


def pytest_terminal_summary(terminalreporter):
    total = _cpu_seconds()
    terminalreporter.section("CPU seconds by test file")
    for name, seconds in _seconds_by_file.most_common():
        terminalreporter.write_line(f"{seconds:8.2f}  {name}")
    in_files = sum(_seconds_by_file.values())
    terminalreporter.write_line(f"{in_files:8.2f}  all files")
    terminalreporter.write_line(f"{total - in_files:8.2f}  collection and start-up")
    terminalreporter.write_line(f"{total:8.2f}  total: at least {total / 2:.0f} s of wall time on two cores")
