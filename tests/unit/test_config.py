from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.cli import main
from scheduler.config import ConfigError, iter_keys, load_config
from scheduler.config_doc import render

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_load_without_file_or_env() -> None:
    config = load_config(environ={})
    assert config.server.port == 5010
    assert config.scheduling.domain == "d0"


def test_docs_configuration_matches_the_config_type() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == render(), "docs/configuration.md is stale: run `make config-doc`"


def test_every_key_is_documented_with_a_description() -> None:
    doc = render()
    for section, key, _ in iter_keys():
        line = next(line for line in doc.splitlines() if line.startswith(f"| `{section}.{key}` |"))
        assert not line.endswith("|  |"), f"{section}.{key} has no description"


def test_toml_then_env_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[scheduling]\njob_timeout_ms = 20000\nmax_attempts = 5\n[redis]\nurl = "redis://file"\n'
    )
    config = load_config(
        path,
        environ={"LINGUA_SCHEDULING__MAX_ATTEMPTS": "7", "LINGUA_REDIS_URL": "redis://env"},
        overrides={"server": {"port": 6000}},
    )
    assert config.scheduling.job_timeout_ms == 20000
    assert config.scheduling.max_attempts == 7
    assert config.redis.url == "redis://env"
    assert config.server.port == 6000


def test_env_list_value_is_json() -> None:
    config = load_config(
        environ={
            "LINGUA_REDIS__MODE": "sentinel",
            "LINGUA_REDIS__SENTINELS": '["h1:26379","h2:26379"]',
        }
    )
    assert config.redis.sentinels == ["h1:26379", "h2:26379"]


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"LINGUA_SCHEDULING__JOB_TIMEOUT_MS": "5"}, "scheduling.job_timeout_ms"),
        ({"LINGUA_SCHEDULING__JOB_TIMEOUT_MS": "soon"}, "scheduling.job_timeout_ms"),
        ({"LINGUA_SCHEDULING__NO_SUCH_KEY": "1"}, "scheduling.no_such_key"),
        ({"LINGUA_REDIS__MODE": "mesh"}, "redis.mode"),
        ({"LINGUA_REDIS__KEY_PREFIX": "a{b}"}, "redis.key_prefix"),
        ({"LINGUA_REDIS__MODE": "sentinel"}, "redis.sentinels"),
        ({"LINGUA_REDIS__MODE": "cluster"}, "redis.url"),
        # every sweep would look like a Redis stall
        ({"LINGUA_SCHEDULING__SWEEP_INTERVAL_MS": "1000"}, "scheduling.stall_ms"),
        ({"LINGUA_RUNTIME__PRESENCE_REFRESH_MS": "5000"}, "runtime.presence_refresh_ms"),
        # a third of the TTL at most: presence must survive one failed refresh
        ({"LINGUA_RUNTIME__PRESENCE_REFRESH_MS": "2500"}, "runtime.presence_refresh_ms"),
        ({"LINGUA_RUNTIME__DRAIN_GRACE_MS": "4000"}, "runtime.drain_grace_ms"),
        ({"LINGUA_RUNTIME__ROUTE_GRACE_MS": "40000"}, "runtime.takeover_lock_ttl_ms"),
        ({"LINGUA_RUNTIME__ENDED_TTL_MS": "5000"}, "runtime.ended_ttl_ms"),
        ({"LINGUA_SERVER__DRAIN_UNREADY_MS": "25000"}, "server.drain_unready_ms"),
        # an active room would expire between two touches
        (
            {
                "LINGUA_SESSION__ROOM_IDLE_MS": "5000",
                "LINGUA_SESSION__ROOM_TOUCH_INTERVAL_MS": "5000",
            },
            "session.room_touch_interval_ms",
        ),
    ],
)
def test_bad_values_name_the_key(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(environ=environ)


def test_unknown_key_in_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[scheduling]\njob_timeout = 1\n")
    with pytest.raises(ConfigError, match="job_timeout"):
        load_config(path, environ={})
    path.write_text("[sched]\nx = 1\n")
    with pytest.raises(ConfigError, match="sched: unknown section"):
        load_config(path, environ={})


def test_unreadable_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[scheduling\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad, environ={})


def test_cli_config_show_prints_effective_values(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINGUA_SCHEDULING__MAX_ATTEMPTS", "9")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "[scheduling]" in out and "max_attempts = 9" in out
    assert main(["config", "show", "--json"]) == 0
    assert '"max_attempts":9' in capsys.readouterr().out


def test_cli_bad_config_exits_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINGUA_SCHEDULING__MAX_ATTEMPTS", "0")
    assert main(["config", "show"]) == 3
    assert "scheduling.max_attempts" in capsys.readouterr().err
