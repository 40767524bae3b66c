"""Helpers shared by the tests, imported by name (`from support.fakes import ATTACK`): tests/ is on sys.path
through `pythonpath = tests` in setup.cfg, so they import the same under `--import-mode=importlib`. Fixtures live
in tests/conftest.py; nothing imports from conftest."""
