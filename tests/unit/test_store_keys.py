"""Keys built from ids are unambiguous (issue #18 item 6).

Every key the stores build from more than one id goes through ``streamer.store.keys``;
two different tuples of ids must never give the same key, whatever the ids contain.
"""

from __future__ import annotations

import itertools
import pathlib
import re

import pytest

from streamer.store import RequestRecord
from streamer.store.keys import client_request_id, compose, lease_key, request_key, split, user_key

SEPARATORS = ["#", "|", ":", "/", "%", "\\", " ", "\x00", "1:", "0:", "#1:", "é", "租户", "🙂", "\u200b"]


def _ids() -> list[str]:
    out = {"", "t9", "u", "v", "u#v", "t9#u", "a", "b"}
    for sep in SEPARATORS:
        out.update({sep, f"a{sep}", f"{sep}b", f"a{sep}b", f"{sep}{sep}", f"1{sep}2", f"2:{sep}"})
    return sorted(out)


def test_the_issue_collision_is_gone() -> None:
    # user "u#v" of tenant "t9" and user "v" of tenant "t9#u" both gave "t9#u#v"
    assert user_key("t9", "u#v") != user_key("t9#u", "v")
    assert request_key("t9", "u#v") != request_key("t9#u", "v")
    assert lease_key("arn|a", "b") != lease_key("arn", "a|b")


def test_no_two_pairs_give_the_same_key_and_split_inverts_compose() -> None:
    ids = _ids()
    seen: dict[str, tuple[str, str]] = {}
    for pair in itertools.product(ids, repeat=2):
        key = compose(*pair)
        assert key not in seen, f"{pair} and {seen.get(key)} both give {key!r}"
        seen[key] = pair
        assert split(key) == pair
    assert len(seen) == len(ids) ** 2


def test_keys_of_different_arity_differ() -> None:
    ids = _ids()[:12]
    keys = {compose(*t) for n in (1, 2, 3) for t in itertools.product(ids, repeat=n)}
    assert len(keys) == len(ids) + len(ids) ** 2 + len(ids) ** 3


@pytest.mark.parametrize("bad", ["", "x", "3:ab", "2:ab#", "2:abc", "02:ab", "²:ab", "-1:a"])
def test_split_refuses_what_compose_never_builds(bad: str) -> None:
    with pytest.raises(ValueError):
        split(bad)


def test_compose_refuses_non_strings_and_nothing() -> None:
    with pytest.raises(ValueError):
        compose()
    with pytest.raises(TypeError):
        compose("a", 1)  # type: ignore[arg-type]


def test_a_request_record_is_keyed_by_tenant_and_id_and_shows_the_client_its_own_id() -> None:
    for tenant, rid in itertools.product(["t9", "t9#u", "a|b", "租户"], ["u#v", "c-17", "2:ab#3:xyz"]):
        record = RequestRecord.new(
            request_id=rid, action="x", user_id="u", tenant_id=tenant, connection_id="c", payload={}
        )
        assert record.request_id == request_key(tenant, rid)
        assert record.client_request_id == rid
        assert record.to_item()["user_key"] == user_key(tenant, "u")
    assert client_request_id("legacy-id") == "legacy-id"


def test_no_key_is_composed_by_hand() -> None:
    """Every separator-joined key goes through ``streamer.store.keys`` (grep the code)."""
    root = pathlib.Path(__file__).resolve().parents[2]
    pattern = re.compile(r"""f["'][^"']*\{[^}]*(?:id|key|arn|tenant|user)[^}]*\}[#|]\{""")
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for folder in ("streamer", "services", "operator")
        for path in (root / folder).rglob("*.py")
        if path.name != "keys.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
