"""Error detail files and the diagnostics zip: complete, and free of every planted secret."""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import pytest

from r3mes_desktop.core.errors import NetworkError
from r3mes_desktop.core.events import EventBus, TransactionStateChanged
from r3mes_desktop.support import diagnostics, logs
from r3mes_desktop.support.redact import SECRETS, register_secret

KEY = "0x" + "c3" * 32
PASSWORD = "Tr0ub4dor&3-keystore-pw"
WEBHOOK = "https://hooks.slack.com/services/T0001/B0002/planted0webhook0secret"
TOKEN = "api-token-planted-Zm9vYmFyYmF6cXV4"
PLANTED = (KEY[2:], PASSWORD, "planted0webhook0secret", TOKEN)


@pytest.fixture(autouse=True)
def _forget_secrets() -> None:
    yield
    SECRETS.forget_all()
    logs.teardown_logging()


def _failing() -> None:
    try:
        raise ConnectionResetError(f"peer reset while sending key {KEY}")
    except ConnectionResetError as exc:
        raise NetworkError("ipfs add failed", service="ipfs") from exc


def test_error_detail_has_chain_stack_inputs_and_system_state() -> None:
    with pytest.raises(NetworkError) as info:
        _failing()
    path = diagnostics.write_error_detail(
        transaction_id="tx/1",
        exc=info.value,
        inputs={"round_id": 7, "private_key": KEY, "cid": "bafkreiq"},
        context={"step": "ipfs_upload"},
    )
    assert path.parent == logs.log_dir() / "errors"
    assert path.name.startswith("error_tx_1_")
    assert (path.stat().st_mode & 0o777) == 0o600
    detail = json.loads(path.read_text())
    chain = detail["exception_chain"]
    assert [c["type"].rsplit(".", 1)[-1] for c in chain] == ["NetworkError", "ConnectionResetError"]
    assert chain[0]["service"] == "ipfs" and chain[0]["category"] == "network"
    assert chain[1]["link"] == "cause"
    assert any(f["function"] == "_failing" for f in chain[0]["frames"])
    assert detail["error"]["category"] == "network"
    assert detail["inputs"]["round_id"] == 7 and detail["inputs"]["private_key"] == "[REDACTED]"
    system = detail["system"]
    assert system["memory"]["total_mb"] > 0
    assert set(system["disk"]) == {"data", "logs"}
    assert system["device"]["cpu_count"] >= 1
    assert KEY[2:] not in path.read_text()


async def test_recorder_writes_a_file_per_failed_transaction(tmp_path: Path) -> None:
    bus = EventBus()
    looked_up: list[str] = []

    async def lookup(tx_id: str) -> dict[str, object]:
        looked_up.append(tx_id)
        return {"transaction_id": tx_id, "cid": "bafkrei", "history": [{"kind": "retry"}]}

    recorder = diagnostics.ErrorDetailRecorder(bus, lookup=lookup, directory=tmp_path)
    for old, new in (("pending", "training"), ("training", "ipfs_upload")):
        bus.publish(
            TransactionStateChanged(transaction_id="t1", round_id=3, old_state=old, new_state=new)
        )
    bus.publish(
        TransactionStateChanged(
            transaction_id="t1",
            round_id=3,
            old_state="ipfs_upload",
            new_state="compensating",
            failed_step="ipfs_upload",
            error_category="network",
            error_message=f"upload failed password={PASSWORD}",
        )
    )
    # compensating -> rolled_back is the same failure: no second file
    bus.publish(
        TransactionStateChanged(
            transaction_id="t1", round_id=3, old_state="compensating", new_state="rolled_back"
        )
    )
    await recorder.drain()
    recorder.close()
    assert looked_up == ["t1"]
    (path,) = diagnostics.error_files(tmp_path)
    detail = json.loads(path.read_text())
    assert detail["error"]["failed_step"] == "ipfs_upload"
    assert detail["context"]["status"]["cid"] == "bafkrei"
    assert PASSWORD not in path.read_text()


def test_export_contains_everything_and_no_planted_secret(tmp_path: Path) -> None:
    register_secret(PASSWORD)
    logs.setup_logging(console=False)
    log = logging.getLogger("r3mes.test")
    log.info("unlocked keystore with %s", PASSWORD)
    log.info("notify via %s", WEBHOOK)
    log.info("api header Authorization: Bearer %s", TOKEN)
    log.info("key is %s", KEY)
    logs.teardown_logging()
    # A log line written before redaction existed (older version, or copied in by hand).
    raw = logs.log_dir() / "r3mes.log.1"
    raw.write_text(json.dumps({"msg": f"key {KEY} {WEBHOOK} token={TOKEN} pw {PASSWORD}"}) + "\n")
    with pytest.raises(NetworkError) as info:
        _failing()
    diagnostics.write_error_detail(transaction_id="t9", exc=info.value, inputs={"key": KEY})
    settings = {
        "chain": {"rpc_url": "http://127.0.0.1:8545", "private_key": KEY},
        "keystore": {"password": PASSWORD},
        "notifications": {"slack_webhook_url": WEBHOOK},
        "api": {"token": TOKEN, "port": 8780},
    }
    out = diagnostics.export_diagnostics(
        tmp_path, settings=settings, stats={"total_transactions": 4}, extra={"breakers": {}}
    )
    assert out.suffix == ".zip" and out.parent == tmp_path
    texts = dict(diagnostics.zip_texts(out))
    assert {
        "logs/r3mes.log",
        "logs/r3mes.log.1",
        "settings.json",
        "stats.json",
        "versions.json",
        "system.json",
        "breakers.json",
        "MANIFEST.txt",
    } <= set(texts)
    assert any(n.startswith("errors/error_t9_") for n in texts)
    blob = "\n".join(texts.values())
    for secret in PLANTED:
        assert secret not in blob, secret
    # Also the raw bytes (compressed members are inflated by zip_texts; check names too).
    with zipfile.ZipFile(out) as zf:
        for secret in PLANTED:
            assert all(secret not in name for name in zf.namelist())
    assert json.loads(texts["settings.json"])["api"]["port"] == 8780
    assert json.loads(texts["stats.json"]) == {"total_transactions": 4}
    assert json.loads(texts["versions.json"])["packages"]["aiohttp"]
    assert "unlocked keystore with [REDACTED]" in texts["logs/r3mes.log"]


def test_error_files_are_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagnostics, "MAX_ERROR_FILES", 3)
    for i in range(5):
        diagnostics.write_error_detail(
            transaction_id=f"t{i}", error={"message": "x"}, directory=tmp_path
        )
    assert len(diagnostics.error_files(tmp_path)) == 3


def test_gpus_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 81559 MiB, 3 MiB, 550.54, 31, 0'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    (gpu,) = diagnostics.device_info()["gpus"]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["memory.total"] == "81559 MiB"
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert diagnostics.device_info()["gpus"] is None
