"""The wire protocol: every frame parses or fails with a documented code, nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer import protocol as p

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
frames = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {},
        optional={
            "action": st.one_of(
                st.text(max_size=140), json_values, st.sampled_from(sorted(p.SYSTEM_ACTIONS))
            ),
            "id": st.one_of(st.text(max_size=140), json_values),
            "request_id": st.one_of(st.text(max_size=140), json_values),
            "payload": json_values,
            "metadata": json_values,
        },
    ).map(json.dumps),
)


@settings(max_examples=600, deadline=None)
@given(frames)
def test_parser_raises_only_its_own_error(frame: Any) -> None:
    try:
        msg = p.parse_client_frame(frame, max_bytes=150)
    except p.ProtocolError as exc:
        assert exc.code in p.ERROR_CODES
        out = exc.to_message()
        assert out["type"] == "error" and out["error"]["code"] == exc.code
        json.dumps(out)
    else:
        assert isinstance(msg.payload, dict) and isinstance(msg.metadata, dict)
        assert msg.action in p.SYSTEM_ACTIONS or p.ACTION_RE.match(msg.action)


def test_deep_nesting_is_a_validation_error() -> None:
    deep = '{"action":"echo","payload":' + '{"a":' * 5000 + "1" + "}" * 5000 + "}"
    with pytest.raises(p.ProtocolError) as err:
        p.parse_client_frame(deep)
    assert err.value.code == p.VALIDATION_ERROR


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", p.VALIDATION_ERROR),
        ("[]", p.VALIDATION_ERROR),
        ("{}", p.VALIDATION_ERROR),
        ('{"action": 5}', p.VALIDATION_ERROR),
        ('{"action": "bad action"}', p.VALIDATION_ERROR),
        ('{"action": "' + "a" * 129 + '"}', p.VALIDATION_ERROR),
        ('{"action": "$nope"}', p.INVALID_ACTION),
        ('{"action": "echo", "payload": []}', p.VALIDATION_ERROR),
        ('{"action": "echo", "metadata": "x"}', p.VALIDATION_ERROR),
        ('{"action": "echo", "id": 7}', p.VALIDATION_ERROR),
        ('{"action": "echo", "id": "' + "x" * 129 + '"}', p.VALIDATION_ERROR),
        ('{"action": "echo", "id": "a", "request_id": "b"}', p.VALIDATION_ERROR),
        ('{"action": "$cancel", "payload": {}}', p.VALIDATION_ERROR),
        (b"\xff\xfe", p.VALIDATION_ERROR),
    ],
)
def test_invalid_frames(frame: str | bytes, code: str) -> None:
    with pytest.raises(p.ProtocolError) as err:
        p.parse_client_frame(frame)
    assert err.value.code == code


def test_too_large() -> None:
    with pytest.raises(p.ProtocolError) as err:
        p.parse_client_frame('{"action":"echo","payload":{"m":"' + "x" * 100 + '"}}', max_bytes=50)
    assert err.value.code == p.PAYLOAD_TOO_LARGE
    assert err.value.details["limit"] == 50


def test_valid_frames_and_aliases() -> None:
    m = p.parse_client_frame(
        '{"action":"echo","id":"c-17","payload":{"message":"hi"},"metadata":{"priority":2}}'
    )
    assert (m.action, m.request_id, m.payload, m.metadata) == (
        "echo",
        "c-17",
        {"message": "hi"},
        {"priority": 2},
    )
    assert p.parse_client_frame('{"action":"echo","request_id":"r1"}').request_id == "r1"
    assert p.parse_client_frame('{"action":"echo","id":"r1","request_id":"r1"}').request_id == "r1"
    m = p.parse_client_frame('{"action":"echo"}')
    assert m.request_id is None and m.payload == {} and not m.is_system
    c = p.parse_client_frame('{"action":"$cancel","payload":{"request_id":"r9"}}')
    assert c.is_system and c.target_request_id == "r9"
    assert p.parse_client_frame('{"action":"$ping"}').is_system
    assert p.new_request_id() != p.new_request_id()


def test_server_messages_have_the_original_field_names() -> None:
    assert p.response_message("r", {"x": 1}) == {
        "type": "response",
        "request_id": "r",
        "success": True,
        "data": {"x": 1},
    }
    ack = p.acknowledgment_message("r")
    assert ack["type"] == "acknowledgment" and ack["status"] == "queued" and ack["message"]
    prog = p.progress_message("r", percentage=150, message="m", seq=3, metadata={"k": 1}, at=0)
    assert prog == {
        "type": "progress",
        "request_id": "r",
        "percentage": 100,
        "message": "m",
        "timestamp": "1970-01-01T00:00:00.000Z",
        "seq": 3,
        "metadata": {"k": 1},
    }
    assert "metadata" not in p.progress_message("r", percentage=1.5, message="", seq=1)
    done = p.complete_message("r", {"ok": True}, at=1.5)
    assert done == {
        "type": "complete",
        "request_id": "r",
        "success": True,
        "result": {"ok": True},
        "timestamp": "1970-01-01T00:00:01.500Z",
    }
    st_ = p.status_message("r", status="PROCESSING", percentage=40, message="m", action="a", attempt=None)
    assert st_ == {
        "type": "status",
        "request_id": "r",
        "status": "PROCESSING",
        "percentage": 40,
        "message": "m",
        "action": "a",
    }
    err = p.error_message(p.SERVICE_UNAVAILABLE, "down", request_id="r")
    assert err == {
        "type": "error",
        "request_id": "r",
        "error": {"code": "SERVICE_UNAVAILABLE", "message": "down", "retryable": True},
    }
    assert "request_id" not in p.error_message(p.VALIDATION_ERROR, "bad")
    with pytest.raises(ValueError):
        p.error_message("NOPE", "x")
    assert p.pong_message()["type"] == "pong" and p.ping_message() == {"type": "ping"}
    assert json.loads(p.encode({"a": "é"})) == {"a": "é"}


def test_peek_request_id_never_raises() -> None:
    assert p.peek_request_id('{"action":"x","id":"a-1"}', max_bytes=100) == "a-1"
    assert p.peek_request_id(b'{"request_id":"b"}', max_bytes=100) == "b"
    assert p.peek_request_id('{"id":"has space"}', max_bytes=100) is None
    assert p.peek_request_id('{"id":"a"}', max_bytes=3) is None
    assert p.peek_request_id(b"\xff", max_bytes=100) is None
    assert p.peek_request_id("[1]", max_bytes=100) is None


@pytest.mark.parametrize(
    "frame",
    [
        '{"action":"echo","payload":{"m":"\\ud800"}}',
        '{"action":"echo","metadata":{"\\uDFFF":1}}',
        '{"action":"echo","payload":{"m":"\ud800"}}',
    ],
)
def test_unpaired_surrogates_are_validation_errors(frame: str) -> None:
    # valid JSON, but not UTF-8: it could be neither stored nor forwarded (found by the fuzzer)
    with pytest.raises(p.ProtocolError) as err:
        p.parse_client_frame(frame)
    assert err.value.code == p.VALIDATION_ERROR


def test_surrogate_pairs_are_fine() -> None:
    assert p.parse_client_frame('{"action":"echo","payload":{"m":"\\ud83d\\ude00"}}').payload == {"m": "😀"}
