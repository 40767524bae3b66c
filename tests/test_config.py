"""Settings from INI: every bad key stops start-up with a message naming the file, section and key."""

from __future__ import annotations

import textwrap

import pytest

from lockllm_wsgi.config import ConfigError, load_settings

MINIMAL = """\
[scanner]
api_key = llm-key
[route:openai]
prefix = /openai
upstream = https://api.openai.com
format = openai
"""


def write(tmp_path, text: str) -> str:
    path = tmp_path / "lockllm.ini"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_an_upstream_and_a_key_are_enough(tmp_path):
    settings = load_settings(write(tmp_path, MINIMAL), environ={})
    assert settings.scanner.backend == "lockllm"
    assert settings.scanner.fail_mode == "closed" and settings.scanner.cache == "off"
    assert settings.routes[0].upstream == "https://api.openai.com"


def test_environment_key_wins_over_the_file(tmp_path):
    settings = load_settings(write(tmp_path, MINIMAL), environ={"LOCKLLM_API_KEY": "from-env"})
    assert settings.scanner.api_key == "from-env"


def test_the_key_never_shows_in_the_settings_repr(tmp_path):
    settings = load_settings(write(tmp_path, MINIMAL), environ={})
    assert "llm-key" not in repr(settings)


def test_without_a_key_the_offline_scanner_is_the_default(tmp_path):
    settings = load_settings(write(tmp_path, MINIMAL.replace("api_key = llm-key", "")), environ={})
    assert settings.scanner.backend == "offline"


@pytest.mark.parametrize("section, line, problem", [
    pytest.param("scanner", "colour = blue", "[scanner] colour is not a known setting", id="unknown-key"),
    pytest.param("scanner", "cache = sqlite:///relative.sqlite", "[scanner] cache needs an absolute path", id="relative-cache"),
    pytest.param("scanner", "fail_mode = maybe", "[scanner] fail_mode must be one of closed, open", id="bad-choice"),
    pytest.param("scanner", "timeout = -1", "[scanner] timeout must be a number above 0", id="negative-timeout"),
    pytest.param("policy", "threshold = 1.5", "[policy] threshold must be a score from 0 to 1", id="threshold-range"),
    pytest.param("policy", "block_status = 500", "[policy] block_status must be a 4xx status", id="block-status"),
    pytest.param("route:openai", "upstream = file:///etc/passwd", "[route:openai] upstream must be an http", id="upstream-scheme"),
    pytest.param("route:openai", "format = soap", "[route:openai] format must be one of", id="unknown-format"),
    pytest.param("thresholds", "admin = 2", "[thresholds] admin must be a score from 0 to 1", id="role-threshold"),
])
def test_bad_settings_name_file_section_and_key(tmp_path, section, line, problem):
    text = MINIMAL + f"\n[{section}]\n{line}\n" if f"[{section}]" not in MINIMAL else MINIMAL.replace(
        f"[{section}]\n", f"[{section}]\n{line}\n")
    if section == "route:openai":
        key = line.split(" = ")[0]
        text = "\n".join(row for row in MINIMAL.splitlines() if not row.startswith(key + " ")).replace(
            "[route:openai]\n", f"[route:openai]\n{line}\n")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value).startswith(path)
    assert problem in str(caught.value)


def test_role_thresholds_need_a_role_source(tmp_path):
    with pytest.raises(ConfigError, match=r"\[policy\] role_from"):
        load_settings(write(tmp_path, MINIMAL + "[thresholds]\nadmin = 0.9\n"), environ={})


def test_unknown_section_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"\[scaner\] is not a known section"):
        load_settings(write(tmp_path, MINIMAL + "[scaner]\nurl = http://x\n"), environ={})


def test_longest_prefix_is_matched_first(tmp_path):
    text = MINIMAL + "[route:azure]\nprefix = /openai/azure\nupstream = https://x.openai.azure.com\nformat = openai\n"
    settings = load_settings(write(tmp_path, text), environ={})
    assert [route.prefix for route in settings.routes] == ["/openai/azure", "/openai"]
