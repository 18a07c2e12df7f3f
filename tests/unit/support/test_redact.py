"""The redactor masks every secret shape we know, and leaves public facts readable."""

from __future__ import annotations

import pytest

from r3mes_desktop.support.redact import MASK, SecretRegistry, redact, redact_obj

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
TX = "0x" + "ab" * 32
ADDRESS = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
CID_V1 = "bafkreia3ni2eh4ykrloarqjesdk3clf6tkczb5whnnz2cxg3hleib234yq"
CID_V0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"loaded key {KEY}", KEY[2:]),
        (f"imported key {KEY[2:]}!", KEY[2:]),
        (f"private key is {KEY}", KEY[2:]),
        (f'{{"signing_key": "{KEY}"}}', KEY[2:]),
        (f"seed={KEY[2:]}", KEY[2:]),
        ("post to https://hooks.slack.com/services/T000/B000/XXXXSECRET now", "XXXXSECRET"),
        ("https://discord.com/api/webhooks/123/tok-en_SECRET", "tok-en_SECRET"),
        ("https://example.org/webhook/abc123SECRET", "abc123SECRET"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.SECRETPART", "SECRETPART"),
        ("password=hunter2hunter", "hunter2hunter"),
        ("keystore_password: 'hunter 2'", "hunter"),
        ('{"api_token": "abc def SECRET"}', "SECRET"),
        ("rpc https://alice:s3cr3tpw@node.example/rpc", "s3cr3tpw"),
        ("PRIVATE_KEY=deadbeefcafe", "deadbeefcafe"),
    ],
)
def test_secret_shapes_are_masked(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert MASK in out


def test_labelled_hashes_and_ordinary_words_stay_readable() -> None:
    text = f"broadcast tx_hash={TX} tokens_per_s=512.0 round=3 cid=bafkreiabc"
    assert redact(text) == text
    assert redact(f'{{"gradient_hash": "{TX}"}}') == f'{{"gradient_hash": "{TX}"}}'


def test_registered_values_are_masked_in_any_form() -> None:
    reg = SecretRegistry()
    reg.register("CorrectHorseBattery")
    reg.register(bytes.fromhex(KEY[2:]))
    reg.register("abc")  # too short: would mask half the log
    out = redact(f"pw CorrectHorseBattery key {KEY.upper()[2:].lower()} abc", reg)
    assert "CorrectHorseBattery" not in out and KEY[2:] not in out
    assert out.endswith("abc")
    assert len(reg) > 0


def test_redact_obj_masks_sensitive_keys_and_nested_strings() -> None:
    settings = {
        "chain": {"rpc_url": "http://127.0.0.1:8545", "private_key": "anything"},
        "notify": {"slack_webhook_url": "https://hooks.slack.com/x"},
        "notes": [f"key {KEY}", 3, None],
        "api": {"token": ""},
    }
    out = redact_obj(settings)
    assert out["chain"] == {"rpc_url": "http://127.0.0.1:8545", "private_key": MASK}
    assert out["notify"]["slack_webhook_url"] == MASK
    assert out["notes"] == [f"key {MASK}", 3, None]
    assert out["api"]["token"] == ""


@pytest.mark.parametrize(
    ("key", "sensitive"),
    [
        ("api_token", True),
        ("privateKey", True),
        ("private_key_hex", True),
        ("slack_webhook_url", True),
        ("keystore_password", True),
        ("Authorization", True),
        ("tokens_per_s", False),
        ("total_tokens", False),
        ("key_count", False),
        ("tx_hash", False),
    ],
)
def test_sensitive_key_names(key: str, sensitive: bool) -> None:
    from r3mes_desktop.support.redact import is_sensitive_key

    assert is_sensitive_key(key) is sensitive


def test_json_and_kv_pairs_only_mask_sensitive_names() -> None:
    text = '{"tokens_per_s": "512", "api_token": "s3cret-value"} total_tokens=9 privateKey=abcdef12'
    out = redact(text)
    assert '"tokens_per_s": "512"' in out and "total_tokens=9" in out
    assert "s3cret-value" not in out and "abcdef12" not in out


def test_messages_about_secret_fields_stay_readable() -> None:
    for text in (
        "private_key: expected 64 hexadecimal digits",
        "password: must be a non-empty string",
        "api_token: missing",
    ):
        assert redact(text) == text
    assert "hunter2" not in redact("password: hunter2")
    assert "correcthorsebatterystaple" not in redact("password: correcthorsebatterystaple")


@pytest.mark.parametrize(
    "text",
    [
        f"transaction {TX} was not mined within 120 s",
        f"Transaction HexBytes('{TX}') is not in the chain after 120 seconds",
        f"submitGradient reverted: {TX[2:]}",
        f"miner {ADDRESS} has 0 ETH; block {TX}",
        f"token {ADDRESS} balance 12",
        f"token_address={ADDRESS} contract={ADDRESS.lower()}",
        f'{{"token_address": "{ADDRESS}", "cid": "{CID_V1}"}}',
        f"uploaded {CID_V1} and pinned {CID_V0}",
    ],
)
def test_public_hashes_addresses_and_cids_stay_readable(text: str) -> None:
    assert redact(text) == text


def test_registered_key_is_masked_next_to_a_readable_tx_hash() -> None:
    reg = SecretRegistry()
    reg.register(bytes.fromhex(KEY[2:]))
    out = redact(f"transaction {TX} signed with {KEY} ({KEY[2:].upper()})", reg)
    assert out == f"transaction {TX} signed with {MASK} ({MASK})"


def test_redact_obj_keeps_public_values_and_masks_keys_by_name() -> None:
    record = {
        "tx_hash": TX,
        "contract_address": ADDRESS,
        "token_address": ADDRESS,
        "cid": CID_V1,
        "key": KEY,
        "signing_key": KEY[2:],
        "key_count": 3,
    }
    out = redact_obj(record)
    assert out == {**record, "key": MASK, "signing_key": MASK}
