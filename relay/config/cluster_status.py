"""The ``cluster_status`` section of relay's config file, as frozen models.

The database hosts use the shape of Phorge's ``cluster.databases`` so an
operator can paste that list in. Passwords may come from the entry itself
(``pass``), a file (``pass_file``) or an environment variable (``pass_env``),
the last two read by the rules of ``relay.config.secrets``; whichever is
used, the secret is held as a ``pydantic.SecretStr`` and never shows in
``repr``, ``str``, ``model_dump`` or validation errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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

__all__ = [
    "ClusterStatusConfig",
    "ConnectionTarget",
    "DatabaseHost",
    "HostDefaults",
    "RepositorySource",
    "StatusKeys",
]

#: Phorge's own default for ``mysql.port``.
DEFAULT_PORT = 3306
#: Phorge's own default for ``mysql.user``.
DEFAULT_USER = "root"

# The namespace is pasted into SQL as part of a database name, so it must
# be a plain identifier; Phorge's ``storage.default-namespace`` is one too.
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_]{1,48}$")

_MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid", strict=True, hide_input_in_errors=True)


@dataclass(frozen=True)
class ConnectionTarget:
    """Everything needed to open one MySQL connection, resolved from config.

    ``password`` is a ``SecretStr``; call ``get_secret_value()`` only at
    the moment of connecting. ``label`` is the ``host:port`` that status
    output, logs and events use to name the host.
    """

    host: str
    port: int
    user: str
    password: SecretStr = field(repr=False)

    @property
    def label(self) -> str:
        """The ``host:port`` name of this target, as Phorge's console shows it."""
        return f"{self.host}:{self.port}"


class _PasswordSource(BaseModel):
    """Mixin: one optional password, given inline, in a file or in the environment."""

    model_config = _MODEL_CONFIG

    password: SecretStr | None = Field(default=None, alias="pass")
    # A path arrives as a string from JSON and from Python callers alike.
    pass_file: Path | None = Field(default=None, strict=False)
    pass_env: str | None = None

    # The secret read from whichever source was given; None when none was.
    _secret: SecretStr | None = PrivateAttr(default=None)

    @field_validator("pass_file", mode="before")
    @classmethod
    def _names_a_file(cls, path: object) -> object:
        # As a Path, "" would be "." and read as "cannot read .: Is a directory".
        if path == "":
            raise ValueError("names no file; give the path of the file holding the secret")
        return path

    @model_validator(mode="after")
    def _load_secret(self) -> _PasswordSource:
        given = [
            name
            for name, value in (
                ("pass", self.password),
                ("pass_file", self.pass_file),
                ("pass_env", self.pass_env),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise ValueError(f"give the password one way only, not {' and '.join(given)}")
        read = read_secret_validated(
            file=self.pass_file, env=self.pass_env, file_field="pass_file", env_field="pass_env"
        )
        self._secret = read if read is not None else self.password
        return self

    @property
    def secret(self) -> SecretStr | None:
        """The password from whichever source was configured, or None."""
        return self._secret


class HostDefaults(_PasswordSource):
    """Port, user and password applied to every host that does not set its own.

    These play the part of Phorge's ``mysql.port``, ``mysql.user`` and
    ``mysql.pass`` when ``cluster.databases`` is configured.
    """

    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    user: str = Field(default=DEFAULT_USER, min_length=1)


class DatabaseHost(_PasswordSource):
    """One entry of Phorge's ``cluster.databases``.

    ``persistent`` and ``partition`` are accepted so a Phorge list can be
    pasted unchanged; relay always opens a short-lived management connection
    and shows ``partition`` for information only.
    """

    host: str = Field(min_length=1)
    role: Literal["master", "replica"]
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = Field(default=None, min_length=1)
    disabled: bool = False
    persistent: bool = False
    partition: list[str] | None = None

    @property
    def is_master(self) -> bool:
        """True when this host is configured with the ``master`` role."""
        return self.role == "master"


class RepositorySource(_PasswordSource):
    """Where to read Phorge's repository and Almanac tables from.

    Left empty, relay reads from the configured master with the master's
    credentials; ``host`` names another server (a replica, say), and any of
    ``port``/``user``/password given here override what would be inherited.
    """

    enabled: bool = True
    host: str | None = Field(default=None, min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = Field(default=None, min_length=1)


class StatusKeys(BaseModel):
    """The subscription keys a browser subscribes to for each kind of status."""

    model_config = _MODEL_CONFIG

    databases: str = Field(default="relay.cluster.databases", min_length=1)
    repositories: str = Field(default="relay.cluster.repositories", min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> StatusKeys:
        if self.databases == self.repositories:
            raise ValueError("keys.databases and keys.repositories must differ")
        return self


class ClusterStatusConfig(BaseModel):
    """The whole ``cluster_status`` section; the status module is off without it."""

    model_config = _MODEL_CONFIG

    databases: list[DatabaseHost] = Field(default_factory=list)
    defaults: HostDefaults = Field(default_factory=HostDefaults)
    repository: RepositorySource = Field(default_factory=RepositorySource)
    namespace: str = "phabricator"
    database_interval_seconds: float = Field(default=3.0, gt=0, le=3600)
    repository_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    connect_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    query_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    # Phorge makes a second pusher wait up to 2 minutes for the write lock,
    # so a lock held well past that is already failing other pushes; 5
    # minutes also matches Phorge's "not pushed very recently" threshold.
    write_interruption_seconds: float = Field(default=300.0, gt=0)
    keys: StatusKeys = Field(default_factory=StatusKeys)
    instance: str = Field(default="default", min_length=1)
    #: Broker mode: the lease of the node that checks for the whole cluster.
    #: It is renewed every third of this; after its holder dies another node
    #: checks within 4/3 of it (see the README's "Cluster status").
    lease_seconds: float = Field(default=10.0, ge=0.3, le=600)

    @field_validator("namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        if not _NAMESPACE_RE.match(value):
            raise ValueError(
                "namespace must be 1 to 48 letters, digits or underscores "
                "(it is the prefix of Phorge's database names)"
            )
        return value

    @model_validator(mode="after")
    def _no_duplicate_hosts(self) -> ClusterStatusConfig:
        seen: dict[str, int] = {}
        for index, target in enumerate(self.database_targets()):
            if target.label in seen:
                raise ValueError(
                    f"databases[{index}] ({target.label}) repeats databases[{seen[target.label]}]"
                )
            seen[target.label] = index
        return self

    def database_targets(self) -> list[ConnectionTarget]:
        """The connection target of every entry of ``databases``, in order.

        Disabled entries are included (so indexes match); callers must not
        contact them.
        """
        return [self._target_for(entry) for entry in self.databases]

    def _target_for(self, entry: DatabaseHost) -> ConnectionTarget:
        return ConnectionTarget(
            host=entry.host,
            port=entry.port if entry.port is not None else self.defaults.port,
            user=entry.user if entry.user is not None else self.defaults.user,
            password=_first_secret(entry.secret, self.defaults.secret),
        )

    def enabled_masters(self) -> Iterator[DatabaseHost]:
        """The master entries that are not disabled."""
        return (entry for entry in self.databases if entry.is_master and not entry.disabled)

    def repository_target(self) -> ConnectionTarget | None:
        """Where to read the repository tables, or None when there is nowhere.

        None when repository status is switched off, or when no ``host`` is
        given and there is no enabled master to default to (a disabled host
        is never contacted).
        """
        source = self.repository
        if not source.enabled:
            return None
        if source.host is not None:
            return ConnectionTarget(
                host=source.host,
                port=source.port if source.port is not None else self.defaults.port,
                user=source.user if source.user is not None else self.defaults.user,
                password=_first_secret(source.secret, self.defaults.secret),
            )
        master = next(self.enabled_masters(), None)
        if master is None:
            return None
        inherited = self._target_for(master)
        return ConnectionTarget(
            host=inherited.host,
            port=source.port if source.port is not None else inherited.port,
            user=source.user if source.user is not None else inherited.user,
            password=_first_secret(source.secret, inherited.password),
        )

    def secrets(self) -> list[str]:
        """Every non-empty password in this config, for redacting text."""
        values = {
            s.get_secret_value()
            for s in [self.defaults.secret, self.repository.secret]
            + [e.secret for e in self.databases]
            if s is not None
        }
        return sorted((v for v in values if v), key=len, reverse=True)


def _first_secret(*candidates: SecretStr | None) -> SecretStr:
    """The first configured secret, or an empty password (Phorge's default)."""
    for candidate in candidates:
        if candidate is not None:
            return candidate
    return SecretStr("")
