"""The command line: argv to a configuration or one line saying what is wrong, ``--check-config``, ``--version``.

Every refusal is one line on stderr, never a traceback. Exit status 2 for a usage error, a flag
or a ``TWILIO_INSIGHTS_EXPORTER_*`` variable the exporter does not know (argparse's status);
1 for a configuration it refuses: a bad value (named by its flag, its variable, or the YAML
file's file:line:column), a file that does not load, a state directory that is missing, a
Kinesis stream with no region. ``--check-config`` refuses exactly what a start refuses (the same
:func:`preflight`), prints the configuration (secrets masked, sizes and durations as they are
written) and writes the configuration's warnings on stderr; a start logs the same warnings
(:func:`warnings`, the one place they are collected).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError
from pydantic import BaseModel, BeforeValidator, ValidationError

from exporter import __version__, logs
from exporter.config import Config, Settings, UnknownVariableError, find_config_file, flag, load_config, variable, yaml_position
from exporter.doors.kinesis.api import resolve_region
from exporter.doors.webhook import network
from exporter.listener import StartupError, serve
from exporter.values import format_duration, format_size, parse_size
from exporter.webconfig import WebConfig, WebConfigError, load_web_config

PROG = "twilio-insights-exporter"

log = logging.getLogger("exporter")


# Exit statuses: a configuration refused, and a usage error (a flag or variable not known).
INVALID, USAGE = 1, 2


class CliError(Exception):
    """A configuration the exporter refuses; the message is the one line printed, ``status`` the exit status."""

    def __init__(self, message: str, status: int = INVALID) -> None:
        super().__init__(message)
        self.status = status


def describe(
    exc: ValidationError | ValueError, config_file: os.PathLike[str] | None = None, argv: Sequence[str] = (), environ: Mapping[str, str] = os.environ
) -> str:
    """One line naming each setting and what is wrong; never a value that may be a secret (a size or a network may be named).

    A setting is named where its value came from: its flag, its variable (with the flag), or the
    file:line:column of the YAML file where it is written; an unknown key of the file likewise.
    """
    if not isinstance(exc, ValidationError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    problems = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            # Only the file can name an unknown key: argparse refuses unknown flags, load_config unknown variables.
            where = yaml_position(config_file, loc, key=True) if config_file is not None else None
            problems.append(f"{where + ': ' if where else ''}{_dotted(loc)}: not a known setting")
        elif exc.title == "Settings" and loc:
            # Settings' fields are flags; Secrets' and Config's errors name their variables themselves.
            problems.append(f"{_source(loc, config_file, argv, environ)}: {message}")
        else:
            problems.append(message)
    return "; ".join(problems)


def _source(loc: tuple[str | int, ...], config_file: os.PathLike[str] | None, argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """The setting at ``loc`` as it was given: ``--flag``, ``--flag (from VARIABLE)``, or ``file:line:column: yaml.key``.

    In the order of precedence (a flag wins over a variable, a variable over the file); a value
    that none of them gave (a default, a whole section) is named by its flag.
    """
    path, inner = _setting_of(loc)
    named = flag(path) + _inner(inner)
    if any(arg == flag(path) or arg.startswith(flag(path) + "=") for arg in argv):
        return named
    given = {name.upper(): name for name in environ}
    for depth in range(len(loc), 0, -1):  # the setting's own variable, a nested one, or its section's JSON object
        if all(isinstance(part, str) for part in loc[:depth]) and (name := given.get(variable(tuple(map(str, loc[:depth]))))):
            return f"{named} (from {name})"
    if config_file is not None and len(loc) > 1 and (where := yaml_position(config_file, loc)):
        return f"{where}: {_dotted(loc)}"
    return named


def _setting_of(loc: tuple[str | int, ...]) -> tuple[tuple[str, ...], tuple[str | int, ...]]:
    """The path of the flag's field in ``loc``, and what lies inside the field (a list's item, a mapping's key)."""
    model: Any = Settings
    for depth, part in enumerate(loc):
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return tuple(map(str, loc[:depth])), loc[depth:]
        model = fields[part].annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return tuple(map(str, loc[: depth + 1])), loc[depth + 1 :]
    return tuple(map(str, loc)), ()


def _inner(parts: tuple[str | int, ...]) -> str:
    """What lies inside a setting, as a reader counts it.

    >>> _inner((1,)), _inner(("participant_label", "max_values"))
    (' item 2', ' participant_label.max_values')
    """
    return f" {_dotted(parts).lstrip()}" if parts else ""


def _dotted(loc: tuple[str | int, ...]) -> str:
    """A YAML key path, as a reader counts it.

    >>> _dotted(("webhook", "allowed_networks", 1)), _dotted(("labels", "limits", "participant_label", "max_values"))
    ('webhook.allowed_networks item 2', 'labels.limits.participant_label.max_values')
    """
    return "".join(f" item {part + 1}" if isinstance(part, int) else f"{'.' if i else ''}{part}" for i, part in enumerate(loc))


def parse(argv: list[str]) -> Config:
    """The configuration of ``argv``, the environment and the YAML file; :class:`CliError` if refused."""
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):
            return load_config(argv, add_argument=help_argument)
    except SystemExit as exc:
        # argparse's usage block is a screenful for one misspelt flag: keep its last line, the error.
        lines = usage.getvalue().strip().splitlines()
        if exc.code:
            error = lines[-1].removeprefix(PROG + ": ").removeprefix("error: ") if lines else "invalid command line"
            raise CliError(f"{error} (see --help)", USAGE) from None
        raise  # --help printed its text: exit 0
    except UnknownVariableError as exc:
        raise CliError(str(exc), USAGE) from None
    except (ValidationError, ValueError) as exc:
        raise CliError(f"invalid configuration: {describe(exc, find_config_file(argv, os.environ), argv)}") from None


def preflight(config: Config) -> WebConfig | None:
    """What a start would refuse beyond the settings themselves; the web configuration if there is one."""
    settings = config.settings
    web_config = None
    if settings.web.config.file is not None:
        try:
            web_config = load_web_config(settings.web.config.file).config
        except WebConfigError as exc:
            raise CliError(f"invalid configuration: {exc}") from None
    if settings.state.path is not None and not os.path.isdir(settings.state.path.parent or "."):
        raise CliError(f"invalid configuration: --state.path={settings.state.path}: the directory {settings.state.path.parent} does not exist")
    if settings.kinesis.stream_name is not None:
        try:
            region = resolve_region(settings.kinesis)
        except BotoCoreError as exc:  # AWS_PROFILE names a profile that does not exist, ...
            raise CliError(f"invalid configuration: --kinesis.region: {exc}") from None
        if region is None:
            raise CliError(
                "invalid configuration: --kinesis.region: no AWS region: set --kinesis.region, AWS_REGION or AWS_DEFAULT_REGION "
                "(or a region in the AWS profile)"
            )
    return web_config


def warnings(config: Config) -> list[str]:
    """What the configuration allows but an operator should know: the one place warnings are collected.

    Logged at start, written on stderr by ``--check-config``. Other rooms' warnings (the network
    checks, for one) are added to this list here.
    """
    settings = config.settings
    found: list[str] = []
    webhook = settings.webhook
    if webhook.enabled and webhook.insecure_skip_signature_verification:
        found.append(
            "INSECURE: webhook signatures are NOT verified (--webhook.insecure-skip-signature-verification); "
            "anyone who can reach the webhook can write metrics. Use for local trials only."
        )
    elif webhook.enabled and not config.secrets.auth_tokens():
        found.append(
            "no TWILIO_AUTH_TOKEN set: every webhook delivery is answered 503 (Twilio retries it)"
            + (
                "; without the webhook, pass --no-webhook.enabled"
                if settings.pull.enabled or settings.kinesis.stream_name
                else " and /-/ready is 503"
            )
        )
    if webhook.enabled:
        found += network.config_warnings(webhook)
    return found


def check_config(config: Config, web_config: WebConfig | None) -> int:
    """``--check-config``: the configuration on stdout (secrets masked), its warnings on stderr."""
    settings = config.settings
    summary: dict[str, object] = {
        "settings": settings.model_dump(mode="json"),
        "auth_tokens": len(config.secrets.auth_tokens()),
        "pull_credentials": config.secrets.api_credentials() is not None,
        "basic_auth": config.secrets.basic_auth_username is not None,
    }
    if web_config is not None:
        tls = web_config.tls_server_config
        summary["web_config"] = {
            "tls": tls is not None,
            "client_auth_type": tls.client_auth_type if tls else None,
            "basic_auth_users": sorted(web_config.basic_auth_users),
            "headers": sorted(web_config.http_server_config.headers),
        }
    print(json.dumps(summary, indent=2))
    for warning in warnings(config):
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    return 0


def _fail(message: str, status: int = INVALID) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """The command line: exit 0 after a clean stop (or a good --check-config), 1 on a configuration or start-up error, 2 on a usage error."""
    argv = sys.argv[1:] if argv is None else argv
    if "--version" in argv:
        print(f"{PROG} {__version__}")
        return 0
    try:
        config = parse(argv)
        web_config = preflight(config)
    except CliError as exc:
        return _fail(str(exc), exc.status)
    settings = config.settings
    logs.configure(settings.log.level, settings.log.format)
    if settings.check_config:
        return check_config(config, web_config)
    for warning in warnings(config):
        log.warning(warning)
    try:
        asyncio.run(serve(config))
    except (StartupError, WebConfigError) as exc:
        return _fail(str(exc))
    return 0


def help_argument(parser: Any, *names: str, **kwargs: Any) -> Any:
    """Add one flag to --help with its real default and type.

    pydantic-settings writes ``(default: None)``, ``(default factory: dict)`` and ``int`` for a size
    that accepts ``2MiB``; this hook (its documented ``add_argument_method``) rewrites the help and
    metavar from the settings model before argparse sees them. ``--version``, the one flag that is
    no setting besides ``--help``, is listed right after it (:func:`main` answers it before any
    setting is read).
    """
    if kwargs.get("action") == "help":
        added = parser.add_argument(*names, **kwargs)
        parser.add_argument("--version", action="version", version=f"{PROG} {__version__}", help="print the version and exit")
        return added
    field = _field_and_default(kwargs.get("dest", ""))
    help_text = kwargs.get("help")
    if field is not None and isinstance(help_text, str) and help_text.endswith(")") and " (default" in help_text:
        info, default = field
        help_text = help_text[: help_text.rfind(" (default")]
        is_size = any(isinstance(m, BeforeValidator) and m.func is parse_size for m in info.metadata)
        if is_size:
            kwargs["metavar"] = "size"
            help_text += f" (default: {format_size(default)})"
        elif isinstance(default, timedelta):
            kwargs["metavar"] = "duration"
            help_text += f" (default: {format_duration(default)})"
        elif isinstance(default, bool):
            help_text += f" (default: {str(default).lower()})"
        elif default not in (None, {}, []):
            help_text += f" (default: {default})"
        kwargs["help"] = help_text
    return parser.add_argument(*names, **kwargs)


def _field_and_default(dest: str) -> tuple[Any, Any] | None:
    """The field behind a flag's ``dest`` (``webhook.max_body_size``) and its default value."""
    model: Any = Settings
    info, default = None, None
    for depth, part in enumerate(dest.split(".")):
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return None
        info = fields[part]
        default = info.get_default(call_default_factory=True) if depth == 0 else getattr(default, part)
        model = info.annotation
    return info, default
