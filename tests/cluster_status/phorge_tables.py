"""Phorge's repository and Almanac tables, with the real names and column types.

The DDL follows Phorge's storage definitions (``phid`` columns are
``VARBINARY(64)``, booleans ``TINYINT(1)``, versions and epochs ``INT
UNSIGNED``, JSON in ``LONGTEXT``, utf8mb4 collations), trimmed to the
columns a table needs to hold a valid row. :class:`PhorgeTables` creates
them under a namespace unique to the test and writes rows the way Phorge
does.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import string
import time
from typing import Any

from tests.mariadb_harness import MariaDBServer

_REPOSITORY_DDL = [
    """CREATE TABLE {ns}_repository.repository (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  phid VARBINARY(64) NOT NULL,
  name VARCHAR(255) NOT NULL COLLATE utf8mb4_unicode_ci,
  callsign VARCHAR(32) COLLATE utf8mb4_unicode_ci,
  repositorySlug VARCHAR(64) COLLATE utf8mb4_unicode_ci,
  versionControlSystem VARCHAR(32) NOT NULL COLLATE utf8mb4_bin,
  details LONGTEXT NOT NULL COLLATE utf8mb4_bin,
  uuid VARCHAR(64) COLLATE utf8mb4_bin,
  viewPolicy VARBINARY(64) NOT NULL,
  editPolicy VARBINARY(64) NOT NULL,
  pushPolicy VARBINARY(64) NOT NULL,
  credentialPHID VARBINARY(64),
  almanacServicePHID VARBINARY(64),
  spacePHID VARBINARY(64),
  localPath VARCHAR(128) COLLATE utf8mb4_bin,
  profileImagePHID VARBINARY(64),
  dateCreated INT UNSIGNED NOT NULL,
  dateModified INT UNSIGNED NOT NULL,
  UNIQUE KEY key_phid (phid),
  UNIQUE KEY key_callsign (callsign),
  UNIQUE KEY key_slug (repositorySlug),
  UNIQUE KEY key_local (localPath),
  KEY key_vcs (versionControlSystem)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    """CREATE TABLE {ns}_repository.repository_workingcopyversion (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  repositoryPHID VARBINARY(64) NOT NULL,
  devicePHID VARBINARY(64) NOT NULL,
  repositoryVersion INT UNSIGNED NOT NULL,
  isWriting TINYINT(1) NOT NULL,
  writeProperties LONGTEXT COLLATE utf8mb4_bin,
  lockOwner VARCHAR(255) COLLATE utf8mb4_bin,
  UNIQUE KEY key_workingcopy (repositoryPHID, devicePHID)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    """CREATE TABLE {ns}_repository.repository_pushevent (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  phid VARBINARY(64) NOT NULL,
  repositoryPHID VARBINARY(64) NOT NULL,
  epoch INT UNSIGNED NOT NULL,
  pusherPHID VARBINARY(64) NOT NULL,
  requestIdentifier BINARY(12),
  remoteAddress VARBINARY(64),
  remoteProtocol VARCHAR(32) COLLATE utf8mb4_bin,
  rejectCode INT UNSIGNED NOT NULL,
  rejectDetails VARCHAR(64) COLLATE utf8mb4_bin,
  writeWait BIGINT UNSIGNED,
  readWait BIGINT UNSIGNED,
  hostWait BIGINT UNSIGNED,
  hookWait BIGINT UNSIGNED,
  UNIQUE KEY key_phid (phid),
  KEY key_repository (repositoryPHID),
  UNIQUE KEY key_identifier (requestIdentifier),
  KEY key_reject (rejectCode, rejectDetails)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
]

_ALMANAC_DDL = [
    """CREATE TABLE {ns}_almanac.almanac_service (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  phid VARBINARY(64) NOT NULL,
  name VARCHAR(128) NOT NULL COLLATE utf8mb4_unicode_ci,
  nameIndex BINARY(12) NOT NULL,
  mailKey BINARY(20) NOT NULL,
  viewPolicy VARBINARY(64) NOT NULL,
  editPolicy VARBINARY(64) NOT NULL,
  serviceType VARCHAR(64) NOT NULL COLLATE utf8mb4_bin,
  isLocked TINYINT(1) NOT NULL,
  dateCreated INT UNSIGNED NOT NULL,
  dateModified INT UNSIGNED NOT NULL,
  UNIQUE KEY key_phid (phid),
  UNIQUE KEY key_name (nameIndex),
  KEY key_nametext (name),
  KEY key_servicetype (serviceType)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    """CREATE TABLE {ns}_almanac.almanac_binding (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  phid VARBINARY(64) NOT NULL,
  servicePHID VARBINARY(64) NOT NULL,
  devicePHID VARBINARY(64) NOT NULL,
  interfacePHID VARBINARY(64) NOT NULL,
  mailKey BINARY(20) NOT NULL,
  isDisabled TINYINT(1) NOT NULL,
  dateCreated INT UNSIGNED NOT NULL,
  dateModified INT UNSIGNED NOT NULL,
  UNIQUE KEY key_phid (phid),
  UNIQUE KEY key_service (servicePHID, interfacePHID),
  KEY key_device (devicePHID),
  KEY key_interface (interfacePHID)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    """CREATE TABLE {ns}_almanac.almanac_device (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  phid VARBINARY(64) NOT NULL,
  name VARCHAR(128) NOT NULL COLLATE utf8mb4_unicode_ci,
  nameIndex BINARY(12) NOT NULL,
  mailKey BINARY(20) NOT NULL,
  viewPolicy VARBINARY(64) NOT NULL,
  editPolicy VARBINARY(64) NOT NULL,
  isBoundToClusterService TINYINT(1) NOT NULL,
  status VARCHAR(32) NOT NULL COLLATE utf8mb4_bin,
  dateCreated INT UNSIGNED NOT NULL,
  dateModified INT UNSIGNED NOT NULL,
  UNIQUE KEY key_phid (phid),
  UNIQUE KEY key_name (nameIndex),
  KEY key_nametext (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    """CREATE TABLE {ns}_almanac.almanac_property (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  objectPHID VARBINARY(64) NOT NULL,
  fieldIndex BINARY(12) NOT NULL,
  fieldName VARCHAR(128) NOT NULL COLLATE utf8mb4_unicode_ci,
  fieldValue LONGTEXT NOT NULL COLLATE utf8mb4_bin,
  UNIQUE KEY objectPHID (objectPHID, fieldIndex)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
]

_PHID_ALPHABET = string.ascii_lowercase + string.digits
_POLICY = "users"


def new_phid(kind: str) -> str:
    """A PHID of the given four-letter type, e.g. ``PHID-REPO-...``."""
    return f"PHID-{kind}-" + "".join(secrets.choice(_PHID_ALPHABET) for _ in range(20))


def _index(text: str) -> bytes:
    # Phorge stores a 12-byte digest of names for its unique index.
    return hashlib.sha1(text.encode()).digest()[:12]


def _mail_key() -> bytes:
    return "".join(secrets.choice(_PHID_ALPHABET) for _ in range(20)).encode()


class PhorgeTables:
    """Phorge's tables under ``namespace`` on ``server``, and Phorge-like writes."""

    def __init__(self, server: MariaDBServer, namespace: str) -> None:
        self.server = server
        self.ns = namespace
        self.repo_db = f"{namespace}_repository"
        self.almanac_db = f"{namespace}_almanac"

    def create(self) -> PhorgeTables:
        """Create both databases and every table."""
        statements = [
            f"CREATE DATABASE {self.repo_db} DEFAULT CHARSET utf8mb4 COLLATE utf8mb4_bin",
            f"CREATE DATABASE {self.almanac_db} DEFAULT CHARSET utf8mb4 COLLATE utf8mb4_bin",
        ]
        statements += [ddl.format(ns=self.ns) for ddl in _REPOSITORY_DDL + _ALMANAC_DDL]
        self.server.sql(*statements)
        return self

    def drop(self) -> None:
        """Drop both databases."""
        self.server.sql(
            f"DROP DATABASE IF EXISTS {self.repo_db}", f"DROP DATABASE IF EXISTS {self.almanac_db}"
        )

    def _run(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return self.server.sql(sql, args=args)

    # -- Almanac --------------------------------------------------------------

    def add_service(self, name: str, *, service_type: str = "cluster.repository") -> str:
        """An Almanac service (a repository cluster service by default); its PHID."""
        phid = new_phid("ASRV")
        now = int(time.time())
        self._run(
            f"INSERT INTO {self.almanac_db}.almanac_service (phid, name, nameIndex, mailKey, "
            "viewPolicy, editPolicy, serviceType, isLocked, dateCreated, dateModified) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, 0, %s, %s)",
            phid,
            name,
            _index(name),
            _mail_key(),
            _POLICY,
            _POLICY,
            service_type,
            now,
            now,
        )
        return phid

    def add_device(self, name: str) -> str:
        """An Almanac device; its PHID."""
        phid = new_phid("DEVI")
        now = int(time.time())
        self._run(
            f"INSERT INTO {self.almanac_db}.almanac_device (phid, name, nameIndex, mailKey, "
            "viewPolicy, editPolicy, isBoundToClusterService, status, dateCreated, dateModified) "
            "VALUES (%s, %s, %s, %s, %s, %s, 1, 'active', %s, %s)",
            phid,
            name,
            _index(name),
            _mail_key(),
            _POLICY,
            _POLICY,
            now,
            now,
        )
        return phid

    def bind(self, service: str, device: str, *, disabled: bool = False) -> str:
        """Bind a device (through a new interface) to a service; the binding PHID."""
        phid = new_phid("ABND")
        now = int(time.time())
        self._run(
            f"INSERT INTO {self.almanac_db}.almanac_binding (phid, servicePHID, devicePHID, "
            "interfacePHID, mailKey, isDisabled, dateCreated, dateModified) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            phid,
            service,
            device,
            new_phid("AINT"),
            _mail_key(),
            int(disabled),
            now,
            now,
        )
        return phid

    def set_binding_disabled(self, service: str, device: str, disabled: bool) -> None:
        """Disable or enable every binding of ``device`` to ``service``."""
        self._run(
            f"UPDATE {self.almanac_db}.almanac_binding SET isDisabled = %s "
            "WHERE servicePHID = %s AND devicePHID = %s",
            int(disabled),
            service,
            device,
        )

    def set_property(self, object_phid: str, name: str, value: Any) -> None:
        """Set an Almanac property (stored as JSON, like Phorge)."""
        self._run(
            f"INSERT INTO {self.almanac_db}.almanac_property "
            "(objectPHID, fieldIndex, fieldName, fieldValue) VALUES (%s, %s, %s, %s) "
            "ON DUPLICATE KEY UPDATE fieldValue = VALUES(fieldValue)",
            object_phid,
            _index(name),
            name,
            json.dumps(value),
        )

    # -- repositories -------------------------------------------------------------

    def add_repository(
        self, name: str, service: str | None, *, callsign: str | None = None, vcs: str = "git"
    ) -> str:
        """A repository on ``service`` (None: not clustered); its PHID."""
        phid = new_phid("REPO")
        now = int(time.time())
        self._run(
            f"INSERT INTO {self.repo_db}.repository (phid, name, callsign, versionControlSystem, "
            "details, viewPolicy, editPolicy, pushPolicy, almanacServicePHID, "
            "dateCreated, dateModified) VALUES (%s, %s, %s, %s, '{}', %s, %s, %s, %s, %s, %s)",
            phid,
            name,
            callsign,
            vcs,
            _POLICY,
            _POLICY,
            _POLICY,
            service,
            now,
            now,
        )
        return phid

    def push(self, repository: str, *, epoch: int) -> int:
        """Record a push event; its id is the repository version it produces."""
        self._run(
            f"INSERT INTO {self.repo_db}.repository_pushevent (phid, repositoryPHID, epoch, "
            "pusherPHID, rejectCode) VALUES (%s, %s, %s, %s, 0)",
            new_phid("PSHE"),
            repository,
            epoch,
            new_phid("USER"),
        )
        rows = self._run(
            f"SELECT MAX(id) AS id FROM {self.repo_db}.repository_pushevent "
            "WHERE repositoryPHID = %s",
            repository,
        )
        return int(rows[0]["id"])

    def set_version(
        self,
        repository: str,
        device: str,
        version: int,
        *,
        writing: bool = False,
        write_properties: dict[str, Any] | None = None,
        lock_owner: str | None = None,
    ) -> None:
        """Insert or update one device's working copy version row."""
        properties = None if write_properties is None else json.dumps(write_properties)
        self._run(
            f"INSERT INTO {self.repo_db}.repository_workingcopyversion (repositoryPHID, "
            "devicePHID, repositoryVersion, isWriting, writeProperties, lockOwner) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
            "repositoryVersion = VALUES(repositoryVersion), isWriting = VALUES(isWriting), "
            "writeProperties = VALUES(writeProperties), lockOwner = VALUES(lockOwner)",
            repository,
            device,
            version,
            int(writing),
            properties,
            lock_owner,
        )

    def synchronized_service(self, name: str, repository: str) -> tuple[str, list[str]]:
        """A service with two bound devices and one repository both have.

        The repository was last pushed an hour ago; returns its PHID and the
        two devices' PHIDs.
        """
        service = self.add_service(name)
        devices = [self.add_device(f"{name}-{n}.example.com") for n in (1, 2)]
        for device in devices:
            self.bind(service, device)
        phid = self.add_repository(repository, service, callsign=repository.upper())
        version = self.push(phid, epoch=int(time.time()) - 3600)
        for device in devices:
            self.set_version(phid, device, version)
        return phid, devices

    def demote(self, repository: str, device: str) -> None:
        """Delete a device's version row (``bin/repository thaw --demote``)."""
        self._run(
            f"DELETE FROM {self.repo_db}.repository_workingcopyversion "
            "WHERE repositoryPHID = %s AND devicePHID = %s",
            repository,
            device,
        )
