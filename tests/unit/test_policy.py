"""Tests for the rules policy: defaults, validation, reco-config messages, layers, rules files."""

from __future__ import annotations

import random
import re
from pathlib import Path

import orjson
import pytest

from stream_reco.errors import ConfigError
from stream_reco.events import Rejected
from stream_reco.ranking.policy import (
    FIELDS,
    RECOMMENDED,
    Policy,
    RulesConfig,
    RulesUpdate,
    decode_config,
    from_dict,
    load_file,
)


def update(key: str, doc: object) -> RulesUpdate:
    out = decode_config(key.encode(), None if doc is None else orjson.dumps(doc))
    assert isinstance(out, RulesUpdate), out
    return out


def reason(key: bytes | None, value: bytes | None) -> str:
    out = decode_config(key, value)
    assert isinstance(out, Rejected), out
    return out.reason


# -- Policy ----------------------------------------------------------------------------------


def test_defaults_are_plain_relevance() -> None:
    p = Policy()
    assert p.category_cap is None and p.mmr_lambda == 1.0
    assert p.margin_boost == p.price_boost == 0.0
    assert p.promoted == () and p.promoted_share == 0.0 and p.discovery_share == 0.0
    assert p.exclude == frozenset() and dict(p.event_weights) == {}
    assert p.session_half_life_s is None
    assert p.exclude_categories == p.exclude_brands == frozenset()
    assert p.exclude_item_in_view is True  # a product page does not recommend its own item


def test_recommended_shop_values_are_valid() -> None:
    p = Policy(**RECOMMENDED)
    assert p.discovery_share == 0.2 and p.category_cap == 3


def test_policy_is_frozen_and_hashable() -> None:
    p = Policy(promoted=["a", "b", "a"], exclude=["x"], event_weights={"view": 0.5})
    assert p.promoted == ("a", "b")  # order kept: it is the promotion priority
    assert p.exclude == frozenset({"x"})
    assert hash(p) == hash(Policy(promoted=("a", "b"), exclude={"x"}, event_weights={"view": 0.5}))
    with pytest.raises(AttributeError):
        p.mmr_lambda = 0.5  # type: ignore[misc]


def test_weights_override_only_the_given_types() -> None:
    base = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "remove_from_cart": 0.0, "purchase": 8}
    merged = Policy(event_weights={"view": 0.25}).weights(base)
    assert merged == base | {"view": 0.25}


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("category_cap", 0, None),
        ("category_cap", None, None),
        ("category_cap", 2, 2),
        ("mmr_lambda", 0, 0.0),
        ("discovery_share", 0, 0.0),
        ("discovery_share", 0.15, 0.15),
        ("discovery_share", 0.25, 0.25),
        ("session_half_life_s", 0, None),
        ("session_half_life_s", 600, 600.0),
        (
            "exclude_categories",
            ["kitchen", "home > garden", "kitchen"],
            {"kitchen", "home > garden"},
        ),
        ("exclude_brands", ("Acme",), {"Acme"}),
        ("exclude_brands", [], frozenset()),
        ("exclude_item_in_view", False, False),
        ("exclude_item_in_view", True, True),
    ],
)
def test_accepted_values(field: str, value: object, expected: object) -> None:
    assert getattr(Policy(**{field: value}), field) == expected


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("category_cap", -1, "integer in 1..1000, or 0/null for no cap; got -1"),
        ("category_cap", 1.5, "got 1.5"),
        ("category_cap", True, "got true"),
        ("mmr_lambda", 1.5, "0..1 (1 = pure relevance, lower = more variety), got 1.5"),
        ("mmr_lambda", float("nan"), "got nan"),
        ("mmr_lambda", "0.5", 'got "0.5"'),
        ("margin_boost", -0.1, "0..10"),
        ("price_boost", 11, "0..10"),
        ("promoted_share", 1.01, "0..1"),
        ("discovery_share", 0.1, "must be 0 (off) or in 0.15..0.25, got 0.1: fewer"),
        ("discovery_share", 0.3, "crowd out"),
        ("promoted", "item-1", "list of item ids, got str"),
        ("promoted", ["ok", ""], '"" is not an item id'),
        ("exclude", ["a\x1fb"], "is not an item id"),
        ("exclude", [f"i{n}" for n in range(1001)], "more than 1000"),
        ("event_weights", {"like": 1}, "unknown event types ['like']; valid: ['view'"),
        ("event_weights", {"view": -1}, "weights of ['view'] must be finite numbers >= 0"),
        ("event_weights", [1], "must be an object"),
        ("session_half_life_s", -5, "seconds > 0"),
        (
            "exclude_categories",
            "kitchen",
            'must be a list of categories, got str: write ["kitchen"]',
        ),
        ("exclude_categories", ["ok", ""], '"" is not a category (1..128 characters, no controls)'),
        ("exclude_categories", ["k" * 129], "is not a category"),
        ("exclude_categories", [3], "3 is not a category"),
        (
            "exclude_categories",
            [f"c{n}" for n in range(1001)],
            "has 1001 categories, more than 1000",
        ),
        ("exclude_brands", {"Acme": 1}, "must be a list of brands, got dict"),
        ("exclude_brands", ["a\nb"], "is not a brand"),
        ("exclude_item_in_view", 0, "must be true or false, got 0"),
        ("exclude_item_in_view", "no", 'must be true or false, got "no"'),
        ("exclude_item_in_view", None, "must be true or false, got null"),
    ],
)
def test_rejected_values_name_the_field_and_the_range(field: str, value: object, says: str) -> None:
    with pytest.raises(ConfigError, match="invalid policy") as err:
        Policy(**{field: value})
    assert field in str(err.value) and says in str(err.value)


# -- reco-config messages --------------------------------------------------------------------


def test_message_gives_typed_overrides() -> None:
    u = update("cart", {"mmr_lambda": 0.5, "promoted": ["p1", "p2"], "category_cap": None})
    assert u.key == "cart"
    assert dict(u.overrides or {}) == {
        "mmr_lambda": 0.5,
        "promoted": ("p1", "p2"),
        "category_cap": None,
    }


def test_exclusions_and_the_item_in_view_per_placement_by_message_and_file(tmp_path: Path) -> None:
    doc = {"exclude_categories": ["kitchen"], "exclude_brands": ["Acme"]}
    c = RulesConfig().apply(update("product_page", doc))
    c = c.apply(update("recently_viewed", {"exclude_item_in_view": False}))
    page = c.for_placement("product_page")
    assert page.exclude_categories == {"kitchen"} and page.exclude_brands == {"Acme"}
    assert page.exclude_item_in_view and not c.for_placement("recently_viewed").exclude_item_in_view
    assert c.default == Policy()  # other placements keep everything
    path = tmp_path / "rules.toml"
    path.write_text(
        '[placements.product_page]\nexclude_categories = ["kitchen"]\nexclude_brands = ["Acme"]\n'
        "[placements.recently_viewed]\nexclude_item_in_view = false\n"
    )
    loaded = load_file(path)
    for name in ("product_page", "recently_viewed", "elsewhere"):
        assert loaded.for_placement(name) == c.for_placement(name)
    why = reason(b"product_page", b'{"exclude_categories": "kitchen"}')
    assert why == (
        "invalid rules message: product_page.exclude_categories must be a list of categories, "
        'got str: write ["kitchen"]'
    )


@pytest.mark.parametrize("value", [None, b"", b"null", b" null\n"])
def test_null_value_deletes_the_override(value: bytes | None) -> None:
    assert decode_config(b"cart", value) == RulesUpdate("cart", None)


def test_unknown_fields_are_rejected_with_the_valid_ones() -> None:
    why = reason(b"default", b'{"mmr_lambda": 0.5, "diversity": 1}')
    assert why.startswith("invalid rules message: default: unknown fields ['diversity']")
    assert all(f in why for f in FIELDS)


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        (None, b"{}", "no key"),
        (b"", b"{}", "no key"),
        (b"\xff", b"{}", "key is not UTF-8"),
        (b"x" * 129, b"{}", "is not a placement name"),
        (b"cart", b"{", "not valid JSON"),
        (b"cart", b"[1]", "cart must be an object of policy fields, got list"),
        (b"cart", b'{"mmr_lambda": 2}', "cart.mmr_lambda must be a number in 0..1"),
        (b"cart", b'{"discovery_share": 0.5}', "cart.discovery_share must be 0 (off) or in"),
        (b"cart", b'{"promoted": ["' + b"p" * 70_000 + b'"]}', "more than 65536"),
    ],
)
def test_bad_messages_are_rejected_with_a_reason(
    key: bytes | None, value: bytes, says: str
) -> None:
    why = reason(key, value)
    assert why.startswith("invalid rules message: ") and says in why


# -- RulesConfig -----------------------------------------------------------------------------


def test_empty_config_gives_the_default_policy_everywhere() -> None:
    c = RulesConfig()
    assert c.default == Policy()
    assert c.for_placement(None) == c.for_placement("anything") == Policy()


def test_placement_overrides_merge_over_the_default() -> None:
    c = RulesConfig().apply(update("default", {"category_cap": 3, "mmr_lambda": 0.7}))
    c = c.apply(update("cart", {"mmr_lambda": 0.4}))
    assert c.for_placement("cart") == Policy(category_cap=3, mmr_lambda=0.4)
    assert c.for_placement("home") == c.default == Policy(category_cap=3, mmr_lambda=0.7)
    # A later change of the default reaches the placement's unset fields.
    c = c.apply(update("default", {"category_cap": 2}))
    assert c.for_placement("cart") == Policy(category_cap=2, mmr_lambda=0.4)


def test_a_placement_can_switch_a_default_feature_off() -> None:
    c = RulesConfig().apply(update("default", {"category_cap": 3, "discovery_share": 0.2}))
    c = c.apply(update("checkout", {"category_cap": None, "discovery_share": 0}))
    assert c.for_placement("checkout") == Policy()


def test_apply_returns_a_new_config_and_leaves_the_old_one() -> None:
    before = RulesConfig()
    after = before.apply(update("cart", {"mmr_lambda": 0.5}))
    assert before.for_placement("cart") == Policy() and before.placements == ()
    assert after.for_placement("cart").mmr_lambda == 0.5 and after.placements == ("cart",)


def test_delete_reveals_the_file_entry_and_a_message_replaces_it_whole() -> None:
    base = from_dict({"placements": {"cart": {"mmr_lambda": 0.5, "category_cap": 2}}})
    replaced = base.apply(update("cart", {"mmr_lambda": 0.9}))
    assert replaced.for_placement("cart") == Policy(mmr_lambda=0.9)  # not merged with the file's
    assert replaced.apply(RulesUpdate("cart", None)) == base
    assert base.apply(RulesUpdate("unknown", None)) == base


def test_an_empty_message_replaces_the_file_entry_with_nothing() -> None:
    base = from_dict({"default": {"discovery_share": 0.2}})
    assert base.apply(update("default", {})).default == Policy()


def test_from_dict_raises_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"^default.mmr_lambda must be a number in 0..1"):
        from_dict({"default": {"mmr_lambda": -1}})


def test_deleting_the_topic_default_restores_the_file_default() -> None:
    base = from_dict({"default": {"discovery_share": 0.2}})
    c = base.apply(update("default", {"mmr_lambda": 0.5})).apply(RulesUpdate("default", None))
    assert c.default == Policy(discovery_share=0.2)


def test_any_message_sequence_equals_its_compacted_form() -> None:
    """What a restart replays from a compacted topic (latest value per key, tombstones maybe
    already gone) gives the same policies as the full history did."""
    base = from_dict({"default": {"category_cap": 4}, "placements": {"cart": {"mmr_lambda": 0.8}}})
    keys = ["default", "cart", "home", "pdp"]
    values = [None, {}, {"mmr_lambda": 0.3}, {"category_cap": 2, "discovery_share": 0.15}]
    for seed in range(200):
        rng = random.Random(seed)
        history = [update(rng.choice(keys), rng.choice(values)) for _ in range(rng.randint(0, 12))]
        latest = {u.key: u for u in history}
        full, compacted, cleaned = base, base, base
        for u in history:
            full = full.apply(u)
        for u in latest.values():
            compacted = compacted.apply(u)
            if u.overrides is not None:
                cleaned = cleaned.apply(u)
        assert full == compacted == cleaned, seed
        for name in [None, *keys, "other"]:
            assert full.for_placement(name) == cleaned.for_placement(name)


# -- rules files -----------------------------------------------------------------------------

GOOD = {
    "default": {"category_cap": 3, "mmr_lambda": 0.7, "discovery_share": 0.2},
    "placements": {"cart": {"promoted": ["p1"], "promoted_share": 0.1, "discovery_share": 0}},
}


def test_load_json_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_bytes(orjson.dumps(GOOD))
    c = load_file(path)
    assert c.default == Policy(category_cap=3, mmr_lambda=0.7, discovery_share=0.2)
    cart = Policy(category_cap=3, mmr_lambda=0.7, promoted=("p1",), promoted_share=0.1)
    assert c.for_placement("cart") == cart


def test_load_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        "[default]\ncategory_cap = 3\nmmr_lambda = 0.7\ndiscovery_share = 0.2\n"
        '[placements.cart]\npromoted = ["p1"]\npromoted_share = 0.1\ndiscovery_share = 0\n'
        "[placements.checkout]\ncategory_cap = 0\n"
    )
    c = load_file(path)
    assert c == load_file(
        _json(
            tmp_path,
            GOOD | {"placements": {**GOOD["placements"], "checkout": {"category_cap": None}}},
        )
    )
    assert c.for_placement("checkout").category_cap is None


def _json(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "rules.json"
    path.write_bytes(orjson.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ([], "the top level must be an object, got list"),
        (
            {"defaults": {}},
            "unknown top-level keys ['defaults']; valid: ['default', 'placements', 'experiments']",
        ),
        ({"default": {"mmr": 1}}, "default: unknown fields ['mmr']; valid fields: category_cap"),
        ({"placements": {"cart": {"mmr_lambda": 1.5}}}, "placements.cart.mmr_lambda must be a"),
        ({"placements": {"cart": 1}}, "placements.cart must be an object of policy fields"),
        ({"placements": []}, "placements must be an object of placement name"),
        ({"placements": {"default": {}}}, "placements.default: put the shop-wide policy under"),
        ({"placements": {"": {}}}, "placements: '' is not a placement name"),
    ],
)
def test_file_errors_name_the_file_and_the_field(tmp_path: Path, doc: object, says: str) -> None:
    path = _json(tmp_path, doc)
    with pytest.raises(ConfigError) as err:
        load_file(path)
    assert str(err.value).startswith(f"rules file {path}: ") and says in str(err.value)


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("rules.json", b'{"default": ', "not valid JSON"),
        ("rules.toml", b"[default\n", "not valid TOML"),
        ("rules.json", b"\xff\xfe", "not valid JSON"),
        ("rules.toml", b"\xff\xfe", "not valid TOML"),
    ],
)
def test_unparsable_files_are_reported(
    tmp_path: Path, name: str, content: bytes, says: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=says):
        load_file(path)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rules file .*missing.json: cannot read it"):
        load_file(tmp_path / "missing.json")


# -- docs/rules.md tracks the code -----------------------------------------------------------

RULES_DOC = Path(__file__).resolve().parents[2] / "docs" / "rules.md"


def test_documented_examples_load_and_agree(tmp_path: Path) -> None:
    text = RULES_DOC.read_text(encoding="utf-8")
    [json_doc] = re.findall(r"```json\n(.*?)\n```", text, re.S)
    [toml_doc] = re.findall(r"```toml\n(.*?)\n```", text, re.S)
    (tmp_path / "rules.json").write_text(json_doc)
    (tmp_path / "rules.toml").write_text(toml_doc)
    assert load_file(tmp_path / "rules.json") == load_file(tmp_path / "rules.toml")
    assert load_file(tmp_path / "rules.json").default == Policy(**RECOMMENDED)


def test_documented_error_messages_are_the_real_ones(tmp_path: Path) -> None:
    text = RULES_DOC.read_text(encoding="utf-8")
    bad = {"placements": {"cart_page": {"mmr_lambda": 1.5}}}, {"default": {"diversity": 1}}
    for doc in bad:
        path = tmp_path / "rules.json"
        path.write_bytes(orjson.dumps(doc))
        with pytest.raises(ConfigError) as err:
            load_file(path)
        assert str(err.value).replace(str(path), "rules.json") in text


def test_documented_defaults_are_the_code_defaults() -> None:
    text = RULES_DOC.read_text(encoding="utf-8").split("\n## Defaults\n")[1].split("\n## ")[0]
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| [^|]+ \| ([^|]+) \|", text, re.M))
    assert sorted(rows) == sorted(FIELDS)
    shown = {None: "null", (): "`[]`", frozenset(): "`[]`", 1.0: "1", 0.0: "0"}
    for name in FIELDS:
        value = getattr(Policy(), name)
        if isinstance(value, bool):  # before the lookup: True == 1.0 as a dict key
            expected = "true" if value else "false"
        else:
            expected = "`{}`" if name == "event_weights" else shown[value]
        assert rows[name].strip().startswith(expected), name
