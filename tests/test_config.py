"""Configuration precedence (flag > env > default) and parsing, which operators rely on blindly."""

from __future__ import annotations

import argparse
import stat
from dataclasses import fields
from pathlib import Path

import pytest

from shopcast.config import ENV_PREFIX, Config, add_arguments, load


def _load(argv: list[str], env: dict[str, str] | None = None) -> Config:
    """Parse ``argv`` with the real flags and load against an explicit environment."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return load(parser.parse_args(argv), {} if env is None else env)


def test_defaults_without_flags_or_env() -> None:
    config = _load([])
    assert (config.host, config.port, config.redis, config.ice_hosts) == ("127.0.0.1", 8080, "", [])
    assert config.log_json is False


def test_every_field_has_a_flag_and_an_env_variable() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    helps = {action.dest: action.help or "" for action in parser._actions}
    for f in fields(Config):
        assert f.name in helps, f.name
        assert f"{ENV_PREFIX}{f.name.upper()}" in helps[f.name]


def test_env_beats_default_and_is_typed() -> None:
    config = _load([], {"SHOPCAST_PORT": "9000", "SHOPCAST_HOST": "0.0.0.0"})
    assert (config.host, config.port) == ("0.0.0.0", 9000)


def test_flag_beats_env() -> None:
    config = _load(
        ["--port", "9100", "--redis", "redis://flag"],
        {"SHOPCAST_PORT": "9000", "SHOPCAST_REDIS": "redis://env"},
    )
    assert (config.port, config.redis) == (9100, "redis://flag")


def test_env_fills_what_flags_leave_out() -> None:
    config = _load(["--port", "9100"], {"SHOPCAST_STUN_URL": "stun:example.org:3478"})
    assert (config.port, config.stun_url) == (9100, "stun:example.org:3478")


def test_load_without_args_reads_env_only() -> None:
    assert load(None, {"SHOPCAST_PLI_THROTTLE_MS": "250"}).pli_throttle_ms == 250


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("a,b", ["a", "b"]), (" a , b ,", ["a", "b"]), ("10.0.0.1", ["10.0.0.1"]), ("", [])],
)
def test_ice_hosts_env_is_a_comma_list(raw: str, expected: list[str]) -> None:
    assert _load([], {"SHOPCAST_ICE_HOSTS": raw}).ice_hosts == expected


def test_ice_hosts_flag_repeats_and_splits_and_beats_env() -> None:
    config = _load(["--ice-hosts", "a,b", "--ice-hosts", "c"], {"SHOPCAST_ICE_HOSTS": "x,y"})
    assert config.ice_hosts == ["a", "b", "c"]


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "on", " True "])
def test_bool_env_true(raw: str) -> None:
    assert _load([], {"SHOPCAST_LOG_JSON": raw}).log_json is True


@pytest.mark.parametrize("raw", ["0", "false", "no", "off", ""])
def test_bool_env_false(raw: str) -> None:
    assert _load([], {"SHOPCAST_LOG_JSON": raw}).log_json is False


def test_bool_flag_beats_env() -> None:
    assert _load(["--log-json"], {"SHOPCAST_LOG_JSON": "false"}).log_json is True


def test_bad_integer_is_an_error() -> None:
    with pytest.raises(ValueError):
        _load([], {"SHOPCAST_PORT": "eighty"})


def test_base_url_defaults_to_host_and_port_and_strips_a_slash() -> None:
    assert Config(host="127.0.0.1", port=8081).base_url == "http://127.0.0.1:8081"
    assert Config(public_url="https://live.example.com/").base_url == "https://live.example.com"


def test_resolve_secret_prefers_the_given_secret(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    given = "given-secret-0123456789abcdef-0123"
    assert Config(secret=given, secret_file=str(path)).resolve_secret() == given
    assert not path.exists()


def test_resolve_secret_creates_a_private_file_once_and_reuses_it(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "secret"
    first = Config(secret_file=str(path)).resolve_secret()
    assert len(first) >= 32
    assert path.read_text().strip() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = Config(secret_file=str(path)).resolve_secret()
    assert second == first


def test_resolve_secret_from_env_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    kept = "kept-secret-0123456789abcdef-01234"
    path.write_text(kept + "\n")
    assert _load([], {"SHOPCAST_SECRET_FILE": str(path)}).resolve_secret() == kept


def test_every_setting_is_documented_in_the_readme() -> None:
    """The README's configuration table is the operator's reference: no setting may be missing."""
    from dataclasses import fields as dataclass_fields

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [
        f.name for f in dataclass_fields(Config)
        if f"`--{f.name.replace('_', '-')}`" not in readme
        or f"`SHOPCAST_{f.name.upper()}`" not in readme
    ]
    assert missing == []
