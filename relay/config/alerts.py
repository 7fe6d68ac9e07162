"""The ``alerts`` section of relay's config file: where a webhook tells someone what went wrong.

``{"alerts": {"url": "https://hooks.example.com/relay", "secret_file":
"/etc/relay/alerts.secret"}}`` turns alerts on. The secret signs each body
(HMAC-SHA256); it is read by the rules of ``relay.config.secrets`` while the
config is validated and held as a ``pydantic.SecretStr``, never shown.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from relay.config.secrets import read_secret_validated

__all__ = ["AlertsConfig"]


class AlertsConfig(BaseModel):
    """The webhook alerts are POSTed to, and how hard relay tries."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, hide_input_in_errors=True)

    #: ``http://`` or ``https://`` URL the alerts are POSTed to (no credentials in it).
    url: str = Field(min_length=1)
    #: The secret signing each body, from a file...
    secret_file: str | None = None
    #: ...or an environment variable; without either, alerts are not signed.
    secret_env: str | None = None
    #: Time one POST may take.
    timeout_seconds: float = Field(default=5.0, gt=0, le=120, allow_inf_nan=False)
    #: Alerts waiting to be sent; past this the oldest is dropped (and counted).
    queue_size: int = Field(default=100, ge=1, le=100_000)
    #: Attempts per alert before it counts as failed; they back off, doubling.
    attempts: int = Field(default=5, ge=1, le=100)
    backoff_initial_seconds: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    backoff_max_seconds: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    #: A repository service out of sync this long is an alert (shorter ones are pushes).
    out_of_sync_seconds: float = Field(default=300.0, ge=0, allow_inf_nan=False)
    #: How often the node's state is looked at for alerts.
    interval_seconds: float = Field(default=1.0, gt=0, le=60, allow_inf_nan=False)

    _secret: SecretStr | None = PrivateAttr(default=None)

    @field_validator("url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.password is not None or parts.username is not None:
            raise ValueError(
                'must not carry credentials (logs show the URL); use "secret_file" or "secret_env"'
            )
        return url

    @model_validator(mode="after")
    def _load_secret(self) -> AlertsConfig:
        self._secret = read_secret_validated(
            file=self.secret_file,
            env=self.secret_env,
            file_field="secret_file",
            env_field="secret_env",
        )
        return self

    @property
    def secret(self) -> SecretStr | None:
        """The signing secret, or None when alerts go unsigned."""
        return self._secret
