"""The Prometheus web configuration file (``--web.config.file``) for the metrics listener.

The same YAML format every Prometheus exporter reads through the exporter-toolkit
(https://prometheus.io/docs/prometheus/latest/configuration/https/): ``tls_server_config``
(``cert_file``, ``key_file``, ``client_auth_type``, ``client_ca_file``, ``min_version``,
``max_version``), ``basic_auth_users`` (user: bcrypt hash) and ``http_server_config.headers``.
Relative paths are relative to the file's directory, as in the toolkit.

Re-reading: on SIGHUP, and whenever the file or a certificate, key or CA file it names changes
(checked every :data:`WATCH_INTERVAL` seconds, so a Kubernetes Secret update or a cert-manager
renewal lands without a signal). A file that no longer loads is refused with a log line and the
last good configuration stays. Switching TLS on or off needs a restart (the listener is either TLS
or plain); everything else is picked up live.

Differences from the toolkit, refused with a clear error rather than ignored: Python's ``ssl``
cannot ask for a client certificate without verifying it, so ``RequestClientCert`` and
``RequireAnyClientCert`` are not offered; ``cipher_suites`` and ``curve_preferences`` use Go's
names and are not offered either. ``http2`` is accepted and has no effect (aiohttp speaks HTTP/1.1).

Why one module: Prometheus' web configuration file is one format (TLS, basic auth, headers),
loaded, checked and reloaded as one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import bcrypt
import yaml
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from exporter.values import load_yaml

log = logging.getLogger(__name__)

# How often the files are checked for changes (a stat of at most four files).
WATCH_INTERVAL = 30.0

TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1, "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL, "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
# The toolkit's list: response headers an operator may set, and no others.
ALLOWED_HEADERS = ("Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options", "X-XSS-Protection", "Content-Security-Policy")
# Paths that answer without credentials: they carry no data, and the kubelet's probes cannot send
# a password without writing it into the pod spec.
UNAUTHENTICATED_PATHS = frozenset({"/-/healthy", "/-/ready"})


class WebConfigError(ValueError):
    """A web configuration file that cannot be used; the message is one line and holds no secret."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerConfig(_Strict):
    cert_file: str
    key_file: str
    client_auth_type: Literal["NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"] = "NoClientCert"
    client_ca_file: str | None = None
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS13"

    @model_validator(mode="after")
    def _consistent(self) -> TLSServerConfig:
        if self.client_auth_type != "NoClientCert" and not self.client_ca_file:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file")
        if self.client_ca_file and self.client_auth_type == "NoClientCert":
            raise ValueError("client_ca_file is set but client_auth_type is NoClientCert: set VerifyClientCertIfGiven or RequireAndVerifyClientCert")
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            raise ValueError("min_version is above max_version")
        return self


class HTTPServerConfig(_Strict):
    headers: dict[str, str] = Field(default_factory=dict)
    http2: bool = True

    @field_validator("headers")
    @classmethod
    def _allowed(cls, value: dict[str, str]) -> dict[str, str]:
        allowed = {name.lower(): name for name in ALLOWED_HEADERS}
        for name in value:
            if name.lower() not in allowed:
                raise ValueError(f"header {name!r} cannot be set; allowed: {', '.join(ALLOWED_HEADERS)}")
        return value


class WebConfig(_Strict):
    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = Field(default_factory=HTTPServerConfig)
    basic_auth_users: dict[str, str] = Field(default_factory=dict)

    @field_validator("basic_auth_users")
    @classmethod
    def _bcrypt_hashes(cls, value: dict[str, str]) -> dict[str, str]:
        for user, hashed in value.items():
            try:
                bcrypt.checkpw(b"", hashed.encode())
            except ValueError:
                # The hash is not a secret, but say nothing of it beyond whose it is.
                raise ValueError(f"the password of user {user!r} is not a bcrypt hash ($2a$, $2b$ or $2y$)") from None
        return value


@dataclass(frozen=True)
class LoadedWebConfig:
    """One successful read: the parsed file, its TLS context (None without TLS) and what it was read from."""

    config: WebConfig
    ssl_context: ssl.SSLContext | None
    fingerprint: tuple[tuple[str, int, int], ...]


def _resolve(base: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else base / path


def _files(path: Path, config: WebConfig | None) -> list[Path]:
    files = [path]
    tls = config.tls_server_config if config else None
    if tls:
        files += [_resolve(path.parent, tls.cert_file), _resolve(path.parent, tls.key_file)]
        if tls.client_ca_file:
            files.append(_resolve(path.parent, tls.client_ca_file))
    return files


def _fingerprint(files: list[Path]) -> tuple[tuple[str, int, int], ...]:
    result = []
    for file in files:
        try:
            st = os.stat(file)
            result.append((str(file), st.st_mtime_ns, st.st_size))
        except OSError:
            result.append((str(file), -1, -1))
    return tuple(result)


def _error_location(error: ErrorDetails) -> str:
    return ".".join(str(part) for part in error["loc"])


def load_web_config(path: Path) -> LoadedWebConfig:
    """Read, validate and (with TLS) build the SSL context; :class:`WebConfigError` names what is wrong."""
    where = f"--web.config.file {path}"
    try:
        text = path.read_text()
    except OSError as exc:
        raise WebConfigError(f"{where}: {exc.strerror}") from None
    try:
        data = load_yaml(text)  # a key written twice is refused at the second
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        position = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise WebConfigError(f"--web.config.file {path}{position}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WebConfigError(f"{where}: the top level must be a mapping (tls_server_config, basic_auth_users, http_server_config)")
    try:
        config = WebConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "not a known setting (or not supported by this exporter)"
            location = _error_location(error)
            problems.append(f"{location}: {message}" if location else message)
        raise WebConfigError(f"{where}: {'; '.join(problems)}") from None
    files = _files(path, config)
    fingerprint = _fingerprint(files)
    context = _ssl_context(path.parent, config.tls_server_config, where) if config.tls_server_config else None
    return LoadedWebConfig(config, context, fingerprint)


def _ssl_context(base: Path, tls: TLSServerConfig, where: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    cert, key = _resolve(base, tls.cert_file), _resolve(base, tls.key_file)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(f"{where}: tls_server_config: cannot load cert_file {cert} with key_file {key}: {_ssl_reason(exc)}") from None
    context.verify_mode = CLIENT_AUTH[tls.client_auth_type]
    if tls.client_ca_file:
        ca = _resolve(base, tls.client_ca_file)
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(f"{where}: tls_server_config: cannot load client_ca_file {ca}: {_ssl_reason(exc)}") from None
    return context


def _ssl_reason(exc: OSError | ssl.SSLError) -> str:
    return getattr(exc, "reason", None) or exc.strerror or str(exc)


class WebConfigHolder:
    """The web configuration in force, re-read on demand; answers the basic-auth question."""

    # Successful checks are remembered (bcrypt costs ~50-250 ms a check by design; a scrape every
    # few seconds would spend that each time), keyed by a digest of user, password and hash, so a
    # changed hash or password never matches an old entry. Failures are never remembered.
    _CACHE_SIZE = 64

    def __init__(self, path: Path, loaded: LoadedWebConfig) -> None:
        self.path = path
        self.loaded = loaded
        self._verified: OrderedDict[bytes, None] = OrderedDict()

    @property
    def config(self) -> WebConfig:
        return self.loaded.config

    def changed(self) -> bool:
        """Whether the file or a file it names changed since the last read."""
        return _fingerprint([Path(name) for name, _, _ in self.loaded.fingerprint]) != self.loaded.fingerprint

    def reload(self) -> bool:
        """Read the file again; True when a new configuration is in force. A bad file keeps the old one."""
        try:
            loaded = load_web_config(self.path)
        except WebConfigError as exc:
            log.error("web configuration not reloaded, the previous one stays in force", extra={"error": str(exc)})
            # Remember what was seen, so the same bad file is reported once, not every check.
            self.loaded = LoadedWebConfig(self.loaded.config, self.loaded.ssl_context, _fingerprint(_files(self.path, self.loaded.config)))
            return False
        if (loaded.ssl_context is None) != (self.loaded.ssl_context is None):
            log.error("web configuration not reloaded: switching TLS on or off needs a restart")
            self.loaded = LoadedWebConfig(self.loaded.config, self.loaded.ssl_context, loaded.fingerprint)
            return False
        self.loaded = loaded
        self._verified.clear()
        log.info("web configuration reloaded", extra={"tls": loaded.ssl_context is not None, "basic_auth_users": len(loaded.config.basic_auth_users)})
        return True

    async def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries a user and password of ``basic_auth_users``."""
        users = self.config.basic_auth_users
        if not users:
            return True
        user, password = _basic_credentials(header)
        if user is None or password is None:
            return False
        hashed = users.get(user)
        key = hashlib.sha256(b"\0".join((user.encode(), password.encode(), (hashed or "").encode()))).digest()
        if hashed is not None and key in self._verified:
            self._verified.move_to_end(key)
            return True
        # bcrypt is slow on purpose: off the event loop, so deliveries keep flowing meanwhile.
        # An unknown user is checked against a known user's hash (and refused whatever the
        # result), so its answer takes as long as a known user's: no telling which users exist.
        target = (hashed if hashed is not None else next(iter(users.values()))).encode()
        ok = await asyncio.get_running_loop().run_in_executor(None, bcrypt.checkpw, password.encode(), target)
        if ok and hashed is not None:
            self._verified[key] = None
            while len(self._verified) > self._CACHE_SIZE:
                self._verified.popitem(last=False)
            return True
        return False


def _basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    if not header or header[:6].lower() != "basic ":
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, None)


def middleware(holder: WebConfigHolder) -> Middleware:
    """Basic auth in front of every path of the metrics listener but the probes'."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in UNAUTHENTICATED_PATHS and not await holder.authorized(request.headers.get("Authorization")):
            raise web.HTTPUnauthorized(text="Unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="twilio-insights-exporter"'})
        return await handler(request)

    return guard


def add_headers(holder: WebConfigHolder) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An ``on_response_prepare`` hook setting ``http_server_config.headers`` on every answer (streamed ones too)."""

    async def hook(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(holder.config.http_server_config.headers)

    return hook
