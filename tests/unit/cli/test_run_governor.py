"""`r3mes-miner run` governor flags: each overrides its setting, and a bad one exits 2
naming the flag, the value and the accepted range before anything starts."""

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


def test_flags_override_the_settings() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "--only-when-idle",
            "3",
            "--not-on-battery",
            "--max-other-cpu",
            "50",
            "--pause-while",
            "steam",
            "--pause-while",
            "zoom",
            "--window",
            "sat:09:00-17:30",
            "--gpu-temp-limit",
            "84",
        ]
    )
    settings = governor_settings(_ctx(), args)
    assert settings.governor_idle_minutes == 3
    assert settings.governor_not_on_battery
    assert settings.governor_max_other_cpu == 50
    assert settings.governor_pause_while == ("steam", "zoom")
    assert settings.governor_windows == ("sat:09:00-17:30",)
    assert settings.governor_gpu_temp_limit == 84


def test_no_flag_keeps_the_settings() -> None:
    ctx = _ctx()
    assert governor_settings(ctx, build_parser().parse_args(["run"])) is ctx.settings


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--only-when-idle", "2000"], "--only-when-idle: governor_idle_minutes"),
        (["--window", "sat:9-17"], "expected DAY:HH:MM-HH:MM"),
        (["--battery-floor", "120"], "accepted 0–100 % on battery"),
    ],
)
def test_a_bad_flag_names_it_and_the_range(argv: list[str], expected: str) -> None:
    args = build_parser().parse_args(["run", *argv])
    with pytest.raises(CliError) as info:
        governor_settings(_ctx(), args)
    assert info.value.code == ExitCode.USAGE
    assert expected in str(info.value)


def test_run_exits_2_on_a_bad_window_before_starting(cli: RunCli) -> None:
    code, _, err = cli("run", "--fast", "--window", "funday:09:00-10:00")
    assert code == ExitCode.USAGE
    assert "--window: governor_windows" in err
    assert "expected DAY:HH:MM-HH:MM" in err
