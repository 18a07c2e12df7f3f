"""`r3mes-miner run` caps flags: each overrides its setting, and a bad one exits 2 naming
the flag before anything starts."""

from __future__ import annotations

import pytest

from r3mes_desktop.cli import build_parser
from r3mes_desktop.cli.commands_run import governor_settings
from r3mes_desktop.cli.context import CliContext
from r3mes_desktop.cli.exit_codes import CliError, ExitCode
from r3mes_desktop.cli.output import Output
from r3mes_desktop.support.config import Settings
from tests.unit.cli.conftest import RunCli


def _ctx() -> CliContext:
    return CliContext(out=Output(as_json=False), _settings=Settings())


def test_caps_flags_override_the_settings() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--device",
            "cuda:0",
            "--device",
            "cuda:1",
            "--training-threads",
            "2",
            "--pow-threads",
            "3",
            "--priority",
            "idle",
            "--memory-budget",
            "4096",
            "--vram-cap",
            "8192",
            "--power-target",
            "250",
            "--gpu-temp-limit",
            "80",
        ]
    )
    settings = governor_settings(_ctx(), args)
    assert settings.mining_devices == ("cuda:0", "cuda:1")
    assert settings.training_threads == 2
    assert settings.pow_threads == 3
    assert settings.process_priority == "idle"
    assert settings.memory_budget_mb == 4096
    assert settings.gpu_vram_cap_mb == 8192
    assert settings.gpu_power_target_w == 250
    assert settings.governor_gpu_temp_limit == 80  # merged with the governor flags


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--device", "tpu:0"], "--device: mining_devices"),
        (["--device", "cpu", "--device", "cuda:0"], "--device: mining_devices"),
        (["--training-threads", "999"], "--training-threads: training_threads"),
        (["--pow-threads", "-1"], "--pow-threads: pow_threads"),
        (["--memory-budget", "100"], "--memory-budget: memory_budget_mb"),
        (["--vram-cap", "10"], "--vram-cap: gpu_vram_cap_mb"),
        (["--power-target", "5"], "--power-target: gpu_power_target_w"),
    ],
)
def test_a_bad_caps_flag_names_it(argv: list[str], expected: str) -> None:
    args = build_parser().parse_args(["run", *argv])
    with pytest.raises(CliError) as info:
        governor_settings(_ctx(), args)
    assert info.value.code == ExitCode.USAGE
    assert expected in str(info.value)


def test_run_exits_2_on_a_bad_caps_flag_before_starting(cli: RunCli) -> None:
    code, _, err = cli("run", "--fast", "--vram-cap", "12")
    assert code == ExitCode.USAGE
    assert "--vram-cap: gpu_vram_cap_mb" in err
    code, _, err = cli("run", "--fast", "--priority", "realtime")
    assert code == ExitCode.USAGE
    assert "--priority" in err
