"""packaging/r3mes-alerts.yml: valid for Prometheus, right on a fresh rig, and naming only
metrics a fresh miner exports (so a renamed metric breaks a test, not an alert in the field)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from r3mes_desktop.api.metrics import MinerMetrics

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "packaging" / "r3mes-alerts.yml"
RULE_CASES = Path(__file__).with_name("r3mes-alerts.test.yml")
PROMETHEUS_YML = ROOT / "packaging" / "prometheus.yml"
METRIC = re.compile(r"\br3mes_[a-z0-9_]+")
PROMTOOL = shutil.which("promtool")
NEEDS_PROMTOOL = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed: apt-get install prometheus (Debian) to check the rules",
)


def _lines(text: str) -> list[tuple[int, str]]:
    """(indent, content) of each meaningful line; a `key: |` block becomes a quoted scalar."""
    raw = text.splitlines()
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(raw):
        line, i = raw[i], i + 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if "\t" in line[: len(line) - len(line.lstrip())]:
            raise ValueError(f"line {i}: tabs are not supported")
        indent = len(line) - len(line.lstrip(" "))
        if stripped.endswith(": |"):
            key_indent = indent + len(stripped) - len(stripped.lstrip("- "))  # "- key: |"
            block: list[str] = []
            while i < len(raw) and (
                not raw[i].strip() or len(raw[i]) - len(raw[i].lstrip(" ")) > key_indent
            ):
                block.append(raw[i])
                i += 1
            body = textwrap.dedent("\n".join(block)).strip("\n") + "\n"
            stripped = f"{stripped[:-1].rstrip()} {json.dumps(body)}"
        out.append((indent, stripped))
    return out


def _scalar(text: str) -> str:
    if text.startswith('"'):
        value = json.loads(text)  # the double-quoted scalars used here are valid JSON strings
        assert isinstance(value, str)
        return value
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise ValueError(f"unterminated quoted scalar: {text}")
        return text[1:-1].replace("''", "'")
    if text[0] in "[{&*!|>%@`":
        raise ValueError(f"unsupported YAML form: {text}")
    return text


def _node(lines: list[tuple[int, str]], pos: int, indent: int) -> tuple[Any, int]:
    if lines[pos][1].startswith("- "):
        items: list[Any] = []
        while pos < len(lines) and lines[pos][0] == indent and lines[pos][1].startswith("- "):
            content = lines[pos][1][2:].strip()
            if ":" not in content:
                items.append(_scalar(content))
                pos += 1
                continue
            lines[pos] = (indent + 2, content)  # the item's mapping starts on this line
            item, pos = _node(lines, pos, indent + 2)
            items.append(item)
        return items, pos
    mapping: dict[str, Any] = {}
    while pos < len(lines) and lines[pos][0] == indent and not lines[pos][1].startswith("- "):
        key, sep, rest = lines[pos][1].partition(":")
        if not sep or (rest and not rest.startswith(" ")) or key in mapping:
            raise ValueError(f"unsupported or duplicate mapping entry: {lines[pos][1]}")
        pos += 1
        if rest.strip():
            mapping[key] = _scalar(rest.strip())
        elif pos < len(lines) and (
            lines[pos][0] > indent or (lines[pos][0] == indent and lines[pos][1].startswith("- "))
        ):
            mapping[key], pos = _node(lines, pos, lines[pos][0])
        else:
            mapping[key] = None
    return mapping, pos


def load_block_yaml(text: str) -> Any:
    """The block-style YAML subset the rules file is written in (mappings, sequences, plain,
    quoted and `|` scalars). The venv has no YAML library; promtool reads the real YAML where
    installed. Anything outside the subset raises, so the tests never read less than is there.
    """
    lines = _lines(text)
    value, pos = _node(lines, 0, lines[0][0])
    if pos != len(lines):
        raise ValueError(f"unexpected indentation at: {lines[pos][1]}")
    return value


def _rules() -> list[dict[str, Any]]:
    doc = load_block_yaml(RULES.read_text())
    assert set(doc) == {"groups"}
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _exported_by_a_fresh_miner() -> set[str]:
    """Sample names of a miner that has done nothing yet, with one breaker and a journal."""
    metrics = MinerMetrics()
    metrics.set_snapshot(
        stats={"error_breakdown": {"network_errors": 0}}, breakers={"chain": {"state": "closed"}}
    )
    return {
        s.name
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }


def test_every_alert_names_only_metrics_a_fresh_miner_exports() -> None:
    rules = _rules()
    exported = _exported_by_a_fresh_miner()

    assert [r["alert"] for r in rules] == [
        "R3mesMinerDown",
        "R3mesBreakerOpen",
        "R3mesFailures",
        "R3mesNoCommits",
        "R3mesGovernorHeld",
    ]
    for rule in rules:
        used = set(METRIC.findall(rule["expr"]))
        assert used or "up{" in rule["expr"], rule
        assert used <= exported, (rule["alert"], used - exported)
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"].startswith("{{ $labels.instance }}:")


def test_the_rules_and_the_scrape_config_agree_on_one_job() -> None:
    config = PROMETHEUS_YML.read_text()
    jobs = re.findall(r"^\s*- job_name: (\S+)$", config, re.M)
    assert jobs == ["r3mes-miners"]
    assert re.search(r"^rule_files:\n  - r3mes-alerts\.yml$", config, re.M)
    used = {job for rule in _rules() for job in re.findall(r'job="([^"]+)"', rule["expr"])}
    assert used == set(jobs)


def test_the_no_commit_alert_reads_a_series_a_fresh_miner_has() -> None:
    [rule] = [r for r in _rules() if r["alert"] == "R3mesNoCommits"]
    assert 'r3mes_transitions_total{job="r3mes-miners", state="committed"}' in rule["expr"]
    metrics = MinerMetrics()
    text = metrics.exposition().decode()
    assert 'r3mes_transitions_total{state="committed"} 0.0' in text


def test_the_subset_parser_refuses_what_it_does_not_understand() -> None:
    with pytest.raises(ValueError, match="unsupported YAML form"):
        load_block_yaml("groups: [a, b]\n")
    with pytest.raises(ValueError, match="unexpected indentation"):
        load_block_yaml("a: 1\n  b: 2\nc: 3\n")
    assert load_block_yaml("a:\n  - b: |\n      x\n      y\n    c: 'it''s'\n") == {
        "a": [{"b": "x\ny\n", "c": "it's"}]
    }


@NEEDS_PROMTOOL
def test_promtool_accepts_the_rules() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


@NEEDS_PROMTOOL
def test_promtool_rule_cases_pass() -> None:
    """Fresh rigs: the first failure counts in increase(), an idle rig raises R3mesNoCommits."""
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_CASES.name],
        cwd=RULE_CASES.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@NEEDS_PROMTOOL
def test_promtool_accepts_the_scrape_config_and_its_rule_file() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "config", str(PROMETHEUS_YML)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
