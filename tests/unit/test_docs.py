"""The docs track the code: every setting documented with its exact default, every dead-letter
field and topic named in the wire contract."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from stream_reco import messages
from stream_reco.config import ENV, Settings
from stream_reco.events import Rejected

DOCS = Path(__file__).resolve().parents[2] / "docs"
# The dead-letter record as docs/contract.md promises it.
DEAD_LETTER_FIELDS = (
    "source_topic",
    "partition",
    "offset",
    "key_b64",
    "value_b64",
    "value_size",
    "value_sha256",
    "value_truncated",
    "reason",
    "ts",
)
# A settings table row: | `VARIABLE` | `default` ... | meaning |
ROW = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|\s*`([^`]*)`[^|]*\|")


def _table_rows() -> list[tuple[str, str]]:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    return [m.groups() for line in text.splitlines() if (m := ROW.match(line))]


def _section(text: str, heading: str) -> str:
    """The text under `## heading` up to the next `## ` heading."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


@pytest.fixture(scope="module")
def contract() -> str:
    return (DOCS / "contract.md").read_text(encoding="utf-8")


def test_settings_table_lists_each_variable_once() -> None:
    names = [name for name, _ in _table_rows()]
    assert names, "no settings table found in docs/configuration.md"
    twice = sorted({n for n in names if names.count(n) > 1})
    assert not twice, f"listed twice in docs/configuration.md: {twice}"


def test_every_setting_is_documented_with_its_exact_default() -> None:
    documented = dict(_table_rows())
    defaults = Settings().to_env()
    assert set(defaults) == set(ENV.values())
    missing = sorted(set(defaults) - set(documented))
    assert not missing, f"settings missing from docs/configuration.md: {missing}"
    wrong = {
        name: (documented[name], default)
        for name, default in defaults.items()
        if documented[name] != default
    }
    assert not wrong, f"documented default != Settings().to_env() (doc, code): {wrong}"


def test_no_documented_setting_is_unknown() -> None:
    unknown = sorted({name for name, _ in _table_rows()} - set(ENV.values()))
    assert not unknown, f"docs/configuration.md lists settings config.ENV does not know: {unknown}"


def test_documented_defaults_parse_back_to_the_defaults() -> None:
    assert Settings.from_env(dict(_table_rows())) == Settings()


def test_contract_names_every_dead_letter_field(contract: str) -> None:
    section = _section(contract, "`reco-deadletter`")
    missing = [f for f in DEAD_LETTER_FIELDS if f"| `{f}` |" not in section]
    assert not missing, f"dead-letter fields without a row in docs/contract.md: {missing}"
    example = re.search(r"```json\n(.*?)\n```", section, re.S)
    assert example is not None, "no JSON example of a dead letter"
    assert list(orjson.loads(example.group(1))) == list(DEAD_LETTER_FIELDS)


def test_contract_covers_the_dead_letter_the_code_writes(contract: str) -> None:
    settings = Settings()
    msg = messages.Message(settings.topic_events, 0, 7, b"s-1", b"x" * 70_000)
    out = messages.rejected(settings, msg, "why")
    section = _section(contract, "`reco-deadletter`")
    undocumented = [f for f in orjson.loads(out.value) if f"| `{f}` |" not in section]
    assert not undocumented, f"dead-letter fields written but not in the contract: {undocumented}"


def test_contract_names_every_default_topic(contract: str) -> None:
    missing = [t for t in Settings().topics if f"`{t}`" not in contract]
    assert not missing, f"topics missing from docs/contract.md: {missing}"
    for topic in Settings().topics:
        assert f"\n## `{topic}`\n" in contract, f"no section for {topic}"


# -- docs/rules.md tracks the policy -------------------------------------------------------------
# A row of the rules table: | `field` | type | default | ...
RULE_ROW = re.compile(r"^\|\s*`([a-z_]+)`\s*\|[^|]*\|\s*([^|]*?)\s*\|")


def _rules() -> str:
    return (DOCS / "rules.md").read_text(encoding="utf-8")


def _rule_rows() -> dict[str, str]:
    table = _section(_rules(), "Defaults")
    return {m.group(1): m.group(2) for line in table.splitlines() if (m := RULE_ROW.match(line))}


def _documented_default(text: str) -> object:
    """The default column as a value: `null (no cap)` -> None, `[]` -> (), `0.7` -> 0.7."""
    word = text.strip("`").split()[0].strip("`")
    if word in ("null", "true", "false") or word[0] in "[{-0123456789":
        value = orjson.loads(word)
        return tuple(value) if isinstance(value, list) else value
    raise AssertionError(f"cannot read the documented default {text!r}")


def test_rules_table_lists_exactly_the_policy_fields() -> None:
    from stream_reco.ranking import policy

    rows = _rule_rows()
    assert sorted(rows) == sorted(policy.FIELDS), "docs/rules.md's table vs policy.FIELDS"


def test_rules_table_gives_each_fields_real_default() -> None:
    from stream_reco.ranking import policy

    default = policy.Policy()
    for name, text in _rule_rows().items():
        value = getattr(default, name)
        if isinstance(value, frozenset | tuple):
            value = tuple(sorted(value))
        elif hasattr(value, "items"):
            value = dict(value.items())
        assert _documented_default(text) == value, f"docs/rules.md default of {name}: {text}"


def test_rules_doc_quotes_the_unknown_field_error_as_the_code_writes_it() -> None:
    from stream_reco.ranking import policy

    why = policy.decode_config(b"default", b'{"diversity": 1}')
    assert isinstance(why, Rejected)
    quoted = why.reason.removeprefix("invalid rules message: ")
    assert quoted in _rules(), f"docs/rules.md should quote: {quoted}"


def test_reliability_doc_explains_every_kind_the_digest_compares() -> None:
    from stream_reco.digest import KINDS

    text = (DOCS / "reliability.md").read_text()
    for kind, spec in KINDS.items():
        row = next((ln for ln in text.splitlines() if ln.startswith(f"| `{kind}` |")), None)
        assert row is not None, kind
        assert ("exact" if spec.exact else "top-20 overlap") in row, kind
