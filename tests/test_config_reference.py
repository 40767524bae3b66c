"""README.md's configuration reference names exactly the settings the code knows, with the code's defaults.

The code side is read through load_settings alone: the sections and keys it knows from its own "not a known ..."
messages, the defaults from the settings of a file that sets nothing but one route.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lockllm_wsgi.config import ConfigError, PolicySettings, load_settings, setting_keys

README = Path(__file__).resolve().parent.parent / "README.md"

ROUTE = "[route:main]\nupstream = https://api.openai.com\nformat = openai\n"
# What must be set before a key documented as "required with ..." is required.
REQUIRED_WHEN = {("ratelimit", "store"): "[ratelimit]\nrequests_per_minute = 60\n"}
REQUIRED, ROLE, POLICY = "required", "*role*", "any `[policy]` key"
# Sections that take every [policy] key besides their own, documented as one row "any `[policy]` key".
WITH_POLICY_KEYS = ("route:NAME", "policy:NAME")


class Conditional:
    """A default that depends on the LockLLM key: `A` with a key, else `B`."""

    def __init__(self, with_key: str, without_key: str):
        self.with_key, self.without_key = with_key, without_key


def documented_default(cell: str) -> object:
    """The README's default cell as a value to compare: None for none (—, ``""``, or words such as "from the host"
    for a value left empty in the file and worked out at run time), REQUIRED, a Conditional, or the backticked
    values."""
    if cell.startswith("required"):
        return REQUIRED
    conditional = re.fullmatch(r"`([^`]+)` with a key, else `([^`]+)`", cell)
    if conditional:
        return Conditional(*conditional.groups())
    if not cell.startswith("`"):  # —, or words for a value worked out at run time ("from the host, else ...")
        return None
    return [None if value in ('""', "''") else value for value in re.findall(r"`([^`]*)`", cell)]


def reference() -> dict[tuple[str, str], object]:
    """(section, key) -> documented default, from the table under "## Configuration reference"."""
    text = README.read_text(encoding="utf-8")
    assert "\n## Configuration reference\n" in text, "README.md has no configuration reference"
    chapter = text.split("\n## Configuration reference\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in chapter.splitlines() if line.startswith("|")]
    assert rows[0].replace(" ", "") == "|section|key|default|meaning|", rows[0]
    table: dict[tuple[str, str], object] = {}
    section = None
    for row in rows[2:]:
        section_cell, key_cell, default_cell, _meaning = (cell.strip() for cell in row.strip().strip("|").split("|"))
        if section_cell:
            section = re.fullmatch(r"`\[([^\]]+)\]`", section_cell).group(1)
        keys = [key_cell] if key_cell in (ROLE, POLICY) else re.findall(r"`([^`]+)`", key_cell)
        assert keys and section, row
        default = documented_default(default_cell)
        if len(keys) > 1:  # one row for several keys: `a`, `b` | `1`, `2`
            assert isinstance(default, list) and len(default) == len(keys), row
            defaults = [[value] for value in default]
        else:
            defaults = [default]
        for key, value in zip(keys, defaults):
            assert (section, key) not in table, f"[{section}] {key} is documented twice"
            table[section, key] = value
    return table


def write(tmp_path, text: str) -> str:
    path = tmp_path / "lockllm.ini"
    path.write_text(text, encoding="utf-8")
    return str(path)


def known(tmp_path, text: str) -> list[str]:
    """The names a "not a known ..." message lists for the file `text`."""
    with pytest.raises(ConfigError, match=r"is not a known") as refused:
        load_settings(write(tmp_path, text), environ={})
    return re.search(r"\(known: ([^)]*)\)$", str(refused.value)).group(1).split(", ")


def code_settings(tmp_path) -> set[tuple[str, str]]:
    """(section, key) of every setting load_settings accepts, [thresholds] as one (thresholds, *role*)."""
    found = set()
    for section in known(tmp_path, ROUTE + "[no_such_section]\n"):
        if section == "thresholds":  # any key is a role
            found.add((section, ROLE))
            continue
        text = ROUTE + "no_such_key = 1\n" if section == "route:NAME" else ROUTE + f"[{section}]\nno_such_key = 1\n"
        for key in known(tmp_path, text):
            policy_key = section in WITH_POLICY_KEYS and key in setting_keys(PolicySettings)
            found.add((section, POLICY if policy_key else key))
    return found


def shown(value: object) -> str | None:
    """A setting's value as the README writes it: on/off, numbers without a needless .0, None for empty."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if value in ("", (), {}, frozenset(), None):
        return None
    return str(value)


def test_the_reference_names_exactly_the_settings_the_code_knows(tmp_path):
    documented, code = set(reference()), code_settings(tmp_path)
    assert not code - documented, f"settings missing from README.md's configuration reference: {code - documented}"
    assert not documented - code, f"README.md's configuration reference names unknown settings: {documented - code}"


def test_the_reference_gives_the_code_defaults(tmp_path):
    settings = load_settings(write(tmp_path, ROUTE), environ={})
    with_key = load_settings(write(tmp_path, ROUTE), environ={"LOCKLLM_API_KEY": "llm-key"})
    wrong = []
    for (section, key), default in reference().items():
        if section == "thresholds" or default == REQUIRED or key == POLICY:
            continue  # no default (see the test below), or the [policy] defaults again
        if section == "route:NAME":
            holder, holder_with_key = settings.routes[0], with_key.routes[0]
        else:
            holder, holder_with_key = getattr(settings, section), getattr(with_key, section)
        # A route keeps its format's own keys (Bedrock's region) in `options`; `preset` has no value of its own.
        actual = shown(getattr(holder, key) if hasattr(holder, key) else getattr(holder, "options", {}).get(key))
        if isinstance(default, Conditional):
            expected = default.without_key
            if shown(getattr(holder_with_key, key)) != default.with_key:
                wrong.append(f"[{section}] {key} with a key: README {default.with_key!r}, "
                             f"code {shown(getattr(holder_with_key, key))!r}")
        else:
            expected = default[0] if isinstance(default, list) else default
        if actual != expected:
            wrong.append(f"[{section}] {key}: README {expected!r}, code {actual!r}")
    assert not wrong, "README.md's configuration reference disagrees with the code:\n" + "\n".join(wrong)


def test_what_the_reference_calls_required_is_required(tmp_path):
    required = [setting for setting, default in reference().items() if default == REQUIRED]
    assert required, "the reference names no required setting"
    for section, key in required:
        if section == "route:NAME":
            text = "".join(line + "\n" for line in ROUTE.splitlines() if not line.startswith(key + " "))
            where = r"\[route:main\]"
        else:
            text = ROUTE + REQUIRED_WHEN.get((section, key), f"[{section}]\n")
            where = re.escape(f"[{section}]")
        with pytest.raises(ConfigError, match=where + f" {key} is required"):
            load_settings(write(tmp_path, text), environ={})


def test_the_offline_rules_are_weighed_against_the_threshold_used_without_one():
    from lockllm_wsgi.offline import DEFAULT_THRESHOLD
    from lockllm_wsgi.policy import SCORE_ONLY_THRESHOLD

    assert PolicySettings().threshold is None  # LockLLM's own `safe` decides
    assert SCORE_ONLY_THRESHOLD == DEFAULT_THRESHOLD
