"""Settings, resolved once: flags > ``MAILCONSOLE_*`` environment > TOML file > defaults.

This is the only module that reads ``os.environ`` or a configuration file. Everything
else receives a :class:`Settings` (or one of its groups) as an argument.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

ENV_PREFIX = "MAILCONSOLE_"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def default_config_path() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "mailconsole" / "config.toml"


def default_database_url() -> str:
    path = _xdg("XDG_DATA_HOME", ".local/share") / "mailconsole" / "mailconsole.db"
    return f"sqlite+aiosqlite:///{path}"


class ConfigError(Exception):
    """A setting is missing or invalid; the text is one line meant for the operator."""


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SmtpSettings(_Group):
    """How to reach the relay."""

    host: str = "localhost"
    port: int = Field(25, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: Literal["none", "starttls", "tls"] = "none"
    """``starttls`` means required: a relay that does not offer it is an error."""
    verify: bool = True
    """Verify the relay's certificate and host name."""
    ca_file: Path | None = None
    """Extra CA bundle to trust (for a private relay); the system store otherwise."""
    timeout: float = Field(60.0, gt=0)
    """Seconds for connect and each command. The reply to the final dot gets
    ``data_timeout`` since a short wait there turns slow successes into duplicates."""
    data_timeout: float = Field(600.0, gt=0)
    pool_size: int = Field(8, ge=1, le=256)
    helo_name: str | None = None
    max_message_size: int = Field(25 * 1024 * 1024, ge=1024)
    """Bytes; a larger rendered message is dead on arrival with a clear reason."""


class RetrySettings(_Group):
    """When to try again. Defaults follow Postfix (doubling from 5 min, capped at
    4000 s) with a much shorter life than an MTA's 5 days, because application mail
    (a password reset, a sign-in code) is useless after a day."""

    max_attempts: int = Field(10, ge=1)
    base_delay: float = Field(300.0, gt=0)
    max_delay: float = Field(4000.0, gt=0)
    max_age: float = Field(86400.0, gt=0)


class Settings(_Group):
    """Every setting of mailconsole, typed and defaulted."""

    amqp_url: SecretStr = SecretStr("amqp://guest:guest@localhost:5672/")
    queue: str = "mail"
    amqp_management_url: SecretStr | None = None
    """RabbitMQ's management API (``http://user:pass@host:15672/vhost``), asked for the
    unacknowledged count that AMQP does not report. Unset: the AMQP URL's host and
    credentials on port 15672; ``off``: not asked (the count shows as unknown)."""
    database_url: SecretStr = Field(
        default_factory=lambda: SecretStr(default_database_url())
    )
    smtp: SmtpSettings = SmtpSettings()
    retry: RetrySettings = RetrySettings()
    concurrency: int = Field(32, ge=1, le=4096)
    """Messages being sent at once by one worker."""
    prefetch: int = Field(200, ge=1, le=65535)
    """Unacknowledged deliveries RabbitMQ may hand this worker."""
    templates_dir: Path | None = None
    message_id_domain: str = "mailconsole.local"
    batch_size: int = Field(100, ge=1, le=5000)
    """Store writes grouped into one commit."""
    batch_wait: float = Field(0.005, ge=0)
    """Seconds the writer waits for a batch to fill before committing what it has."""
    scheduler_interval: float = Field(1.0, gt=0)
    heartbeat_interval: float = Field(5.0, gt=0)
    """A worker silent for 3 intervals is presumed dead and its sends are recovered."""
    shutdown_grace: float = Field(30.0, ge=0)
    publish_timeout: float = Field(10.0, gt=0)
    reconnect_interval: float = Field(5.0, gt=0)
    """Seconds between attempts to reconnect to RabbitMQ after a drop."""
    requeue_stale_after: float = Field(300.0, gt=0)
    """A message queued this long without being picked up is published again
    (covers a crash between the scheduler's commit and its publish)."""
    suppress_hard_bounces: bool = True
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, every secret masked."""
        data = self.model_dump(mode="json")
        data["amqp_url"] = mask_url(self.amqp_url.get_secret_value())
        data["database_url"] = mask_url(self.database_url.get_secret_value())
        if self.amqp_management_url is not None:
            data["amqp_management_url"] = mask_url(
                self.amqp_management_url.get_secret_value()
            )
        if self.smtp.password is not None:
            data["smtp"]["password"] = "********"
        return data


def mask_url(url: str) -> str:
    """Hide the password part of ``scheme://user:password@host``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _ = creds.partition(":")
    return f"{scheme}://{user}{':********' if colon else ''}@{host}"


# Environment names that do not follow the "group_field" pattern.
_GROUPS = ("smtp", "retry")


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key.startswith(ENV_PREFIX + "TEST_"):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name == "config":
            continue
        group, _, field = name.partition("_")
        if group in _GROUPS and field:
            out.setdefault(group, {})[field] = value
        else:
            out[name] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        elif value is not None:
            merged[key] = value
    return merged


def _read_toml(path: Path, explicit: bool) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file not found: {path}") from None
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve the settings.

    Args:
        overrides: values from command-line flags, nested like :class:`Settings`
            (``{"smtp": {"host": "relay"}}``); ``None`` values are ignored.
        config_file: the TOML file; ``MAILCONSOLE_CONFIG`` or the XDG default otherwise.
        environ: the environment to read (``os.environ`` by default).

    Raises:
        ConfigError: one line naming the bad setting and why.
    """
    env = os.environ if environ is None else environ
    explicit = config_file is not None or "MAILCONSOLE_CONFIG" in env
    path = config_file or Path(env.get("MAILCONSOLE_CONFIG") or default_config_path())
    layered = _merge(_read_toml(path, explicit), _from_env(env))
    layered = _merge(layered, overrides or {})
    try:
        return Settings.model_validate(layered)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        env_name = ENV_PREFIX + "_".join(str(p) for p in err["loc"]).upper()
        raise ConfigError(f"bad setting {where} ({env_name}): {err['msg']}") from None
