"""Settings: layering, validation errors, masking."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailconsole.cli import main
from mailconsole.config import ConfigError, load_settings, mask_url


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(
        'queue = "from-file"\nconcurrency = 3\n[smtp]\nhost = "file-relay"\nport = 2525\n'
    )
    env = {"MAILCONSOLE_SMTP_HOST": "env-relay", "MAILCONSOLE_CONCURRENCY": "5"}
    settings = load_settings({"concurrency": 7}, config_file=toml, environ=env)
    assert settings.queue == "from-file"
    assert settings.smtp.host == "env-relay"
    assert settings.smtp.port == 2525
    assert settings.concurrency == 7
    assert settings.retry.max_attempts == 10


def test_environment_names_follow_the_documented_pattern() -> None:
    env = {
        "MAILCONSOLE_AMQP_URL": "amqp://u:p@h:5672/",
        "MAILCONSOLE_DATABASE_URL": "sqlite+aiosqlite:///x.db",
        "MAILCONSOLE_SMTP_USERNAME": "u",
        "MAILCONSOLE_SMTP_PASSWORD": "hunter22",
        "MAILCONSOLE_SMTP_TLS": "starttls",
        "MAILCONSOLE_SMTP_VERIFY": "false",
        "MAILCONSOLE_SMTP_TIMEOUT": "2.5",
        "MAILCONSOLE_SMTP_POOL_SIZE": "3",
        "MAILCONSOLE_RETRY_MAX_ATTEMPTS": "4",
        "MAILCONSOLE_RETRY_BASE_DELAY": "0.25",
        "MAILCONSOLE_RETRY_MAX_DELAY": "1.5",
        "MAILCONSOLE_RETRY_MAX_AGE": "90",
        "MAILCONSOLE_TEMPLATES_DIR": "/tmp/t",
    }
    s = load_settings(environ=env, config_file=None)
    assert (s.smtp.tls, s.smtp.verify, s.smtp.timeout, s.smtp.pool_size) == (
        "starttls",
        False,
        2.5,
        3,
    )
    assert (s.retry.max_attempts, s.retry.base_delay, s.retry.max_delay) == (
        4,
        0.25,
        1.5,
    )
    assert s.retry.max_age == 90 and str(s.templates_dir) == "/tmp/t"
    assert (
        s.smtp.password is not None and s.smtp.password.get_secret_value() == "hunter22"
    )


def test_a_bad_setting_is_one_line_naming_it() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"MAILCONSOLE_SMTP_TLS": "maybe"}, config_file=None)
    assert "smtp.tls" in str(err.value) and "MAILCONSOLE_SMTP_TLS" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(config_file=tmp_path / "nope.toml", environ={})


def test_config_command_masks_every_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILCONSOLE_SMTP_PASSWORD", "s3cret-pw")
    monkeypatch.setenv("MAILCONSOLE_AMQP_URL", "amqp://app:amqp-pw@rabbit:5672/")
    monkeypatch.setenv(
        "MAILCONSOLE_DATABASE_URL", "postgresql+asyncpg://app:db-pw@pg/mail"
    )
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    for secret in ("s3cret-pw", "amqp-pw", "db-pw"):
        assert secret not in out
    assert "amqp://app:********@rabbit:5672/" in out


def test_config_usage_error_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILCONSOLE_CONCURRENCY", "zero")
    assert main(["config"]) == 2
    assert capsys.readouterr().err.startswith("mailconsole: bad setting concurrency")


def test_mask_url_leaves_urls_without_password() -> None:
    assert mask_url("amqp://localhost/") == "amqp://localhost/"
    assert mask_url("amqp://u@h/") == "amqp://u@h/"


def test_a_reader_that_leaves_early_is_not_an_error(tmp_path: Path) -> None:
    """``mailconsole config | head -1``: no traceback, the shell's code for SIGPIPE."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path),
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "mailconsole", "config"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # before the child has written a byte
    err = child.stderr.read().decode()
    assert child.wait(timeout=60) == 141
    assert err == ""
