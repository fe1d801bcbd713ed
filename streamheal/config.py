"""Load and validate the rule file.

Parsing happens in layers: YAML (with the line of every key), then ${VAR}
expansion, then the pydantic model. Every problem of every layer is collected
in one pass and raised together as a `RuleFileError` naming file, line and
field.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from pydantic import Field, PositiveInt, TypeAdapter, ValidationError, field_validator

from streamheal._duration import Duration
from streamheal._duration import parse_duration as parse_duration
from streamheal._yaml import (
    expand_variables,
    format_path,
    line_of,
    load_yaml_with_lines,
)
from streamheal.errors import RuleFileError, RuleFileProblem
from streamheal.log import SECRET_OPTIONS, redact_text
from streamheal.rules import Mode, Rule, RuleSpec, build_rule, spec_types
from streamheal.rules._base import FieldValueError, StrictModel


EMBEDDED_URI = "embedded"


# https://www.mongodb.com/docs/manual/reference/limits/#naming-restrictions
DATABASE_NAME_FORBIDDEN = '/\\. "$*<>:|?\0'
DATABASE_NAME_MAX_BYTES = 63
MIN_SWEEP_INTERVAL_S = 1.0


class MongoSettings(StrictModel):
    uri: str = EMBEDDED_URI
    database: str = Field(min_length=1)
    # Where `uri: embedded` keeps its files: a directory, or ':memory:'.
    storage: str = ".streamheal/data"

    @field_validator("database")
    @classmethod
    def _database_name(cls, database: str) -> str:
        forbidden = sorted({c for c in database if c in DATABASE_NAME_FORBIDDEN})
        if forbidden:
            shown = " ".join(repr(c) for c in forbidden)
            raise ValueError(
                f"a database name cannot contain {shown}, as {database!r} does"
            )
        if len(database.encode()) > DATABASE_NAME_MAX_BYTES:
            raise ValueError(
                f"a database name has at most {DATABASE_NAME_MAX_BYTES} bytes; "
                f"{database!r} has {len(database.encode())}"
            )
        return database

    @property
    def is_embedded(self) -> bool:
        return self.uri == EMBEDDED_URI


class EngineSettings(StrictModel):
    sweep_interval: Duration = 30.0
    fix_delay: Duration = 2.0
    queue_max: PositiveInt = 100
    auto_fix: bool = False
    dry_run: bool = True
    backup: bool = True
    max_docs_per_fix: PositiveInt = 100
    max_attempts: PositiveInt = 3
    # The wait before a failed fix's second attempt; it doubles each time.
    retry_backoff: Duration = 1.0
    batch_window: Duration = 0.01
    profiler_poll: Duration = 1.0

    @field_validator("sweep_interval")
    @classmethod
    def _sweeps_apart(cls, interval_s: float) -> float:
        if interval_s < MIN_SWEEP_INTERVAL_S:
            raise ValueError(
                "a sweep reads every watched collection, so sweeps must be at "
                f"least {MIN_SWEEP_INTERVAL_S:g} s apart"
            )
        return interval_s

    @property
    def default_mode(self) -> Mode:
        """The mode of a rule that does not name one."""
        if not self.auto_fix:
            return "detect"
        return "dry_run" if self.dry_run else "fix"


class DashboardSettings(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=5000, ge=0, le=65535)


class LoggingSettings(StrictModel):
    file: str | None = "logs/streamheal.log"
    level: Literal["debug", "info", "warning", "error"] = "info"


if TYPE_CHECKING:
    AnyRuleSpec = RuleSpec
else:
    # The union of every registered kind, told apart by `kind`. Built with
    # Union[...] because the members come from the registry at import time.
    AnyRuleSpec = Annotated[Union[spec_types()], Field(discriminator="kind")]  # noqa: UP007


class Settings(StrictModel):
    mongodb: MongoSettings
    engine: EngineSettings = EngineSettings()
    dashboard: DashboardSettings = DashboardSettings()
    logging: LoggingSettings = LoggingSettings()
    rules: list[AnyRuleSpec] = Field(min_length=1)

    def build_rules(self) -> list[Rule]:
        return [build_rule(spec, self.engine.default_mode) for spec in self.rules]


_SETTINGS = TypeAdapter(Settings)


def load_settings(
    path: str | Path, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read, expand and validate a rule file, or raise `RuleFileError`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        problem = RuleFileProblem(
            source, None, "(file)", f"cannot be read: {exc.strerror}."
        )
        raise RuleFileError([problem]) from None
    except UnicodeDecodeError as exc:
        line = Path(path).read_bytes()[: exc.start].count(b"\n") + 1
        problem = RuleFileProblem(
            source,
            line,
            "(file)",
            f"is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start} cannot be decoded.",
        )
        raise RuleFileError([problem]) from None
    return parse_settings(text, source, environ)


def parse_settings(
    text: str, source: str = "<rules>", environ: Mapping[str, str] | None = None
) -> Settings:
    """Validate rule-file text; all problems are gathered before raising."""
    data, lines, problems, duplicate_keys = load_yaml_with_lines(text, source)
    if problems:
        raise RuleFileError(problems)
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a {type(data).__name__}"
        problem = RuleFileProblem(
            source,
            1,
            "(top level)",
            f"expected a mapping with mongodb and rules, found {found}.",
        )
        raise RuleFileError([problem])

    data, problems = expand_variables(data, lines, source, environ)
    problems += duplicate_keys + _check_rule_names(data, lines, source)
    try:
        settings = _SETTINGS.validate_python(data)
    except ValidationError as exc:
        problems += [
            _problem_from(error, lines, source, data) for error in exc.errors()
        ]
    if problems:
        raise RuleFileError(sorted(problems, key=lambda p: (p.line or 0, p.field)))
    return settings


def _problem_from(
    error: Any, lines: Mapping[tuple[str | int, ...], int], source: str, data: Any
) -> RuleFileProblem:
    path = tuple(error["loc"])
    # A discriminated union puts the kind into the location; drop it so that
    # the path is the one in the file (rules[0].keys, not rules[0].unique.keys).
    if len(path) >= 3 and path[0] == "rules" and path[2] == _kind_at(data, path[1]):
        path = path[:2] + path[3:]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldValueError):
        path = (*path, cause.field)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "union_tag_invalid":
        message = (
            f"unknown rule kind {error['ctx']['tag']!r}; expected one of "
            f"{error['ctx']['expected_tags']}"
        )
    elif error["type"] == "union_tag_not_found":
        path = (*path, "kind")
        message = "every rule needs a kind"
    elif error["type"] == "extra_forbidden":
        message = "is not a known setting here (check its spelling and indentation)"
    elif error["type"] == "missing":
        message = "is required"
    elif message.startswith(PYDANTIC_PREFIX):
        message = _plain_expectation(error)
    return RuleFileProblem(
        source, line_of(lines, path), format_path(path), f"{message}."
    )


PYDANTIC_PREFIX = "Input should be "
# What a type error expects, in the words of someone writing YAML.
EXPECTED_BY_TYPE = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "text",
    "list_type": "a list (`[a, b]` or lines starting with `- `)",
    "dict_type": "a mapping (`key: value` lines)",
    "model_type": "a mapping (`key: value` lines)",
    "model_attributes_type": "a mapping (`key: value` lines)",
}
SHOWN_VALUE_MAX_CHARS = 60


def _plain_expectation(error: Any) -> str:
    """Pydantic's "Input should be ..." as what was expected and what was found."""
    expected = EXPECTED_BY_TYPE.get(error["type"])
    if expected is None:
        expected = str(error["msg"]).removeprefix(PYDANTIC_PREFIX)
    return f"expected {expected}, not {_shown(error.get('input'))}"


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    if len(text) > SHOWN_VALUE_MAX_CHARS:
        text = text[: SHOWN_VALUE_MAX_CHARS - 3] + "..."
    return text


def _kind_at(data: Any, index: Any) -> Any:
    rules = data.get("rules") if isinstance(data, dict) else None
    if isinstance(rules, list) and isinstance(index, int) and index < len(rules):
        rule = rules[index]
        if isinstance(rule, dict):
            return rule.get("kind")
    return None


def _check_rule_names(
    data: Mapping[str, Any], lines: Mapping[tuple[str | int, ...], int], source: str
) -> list[RuleFileProblem]:
    """Names must be unique; checked on the raw data, so that this problem is
    reported together with every other one."""
    rules = data.get("rules")
    if not isinstance(rules, list):
        return []
    problems = []
    first_index: dict[str, int] = {}
    for index, rule in enumerate(rules):
        name = rule.get("name") if isinstance(rule, dict) else None
        if not isinstance(name, str):
            continue
        if name in first_index:
            path = ("rules", index, "name")
            problems.append(
                RuleFileProblem(
                    source,
                    line_of(lines, path),
                    format_path(path),
                    f"the name {name!r} is already used by "
                    f"rules[{first_index[name]}]; "
                    "rule names must be unique.",
                )
            )
        else:
            first_index[name] = index
    return problems


def redact_uri(uri: str) -> str:
    """The connection string with its password and secret option values as ***.

    Whatever `urlsplit` cannot take apart still passes through `redact_text`,
    so no shape of string gives its password back.
    """
    if uri == EMBEDDED_URI:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:  # an unbalanced [ in the host part
        return redact_text(uri)
    if parts.password is not None:
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[1]
        uri = urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    return redact_text(uri)


def _collect_uri_secrets(uri: str) -> set[str]:
    """Every part of a connection string that may be a secret, also decoded.

    Read leniently, for a string the driver refused: the password is taken
    to run from the first : after the scheme to any later @ (each of them is
    a candidate), and the secret options' values are taken whole. Use it to
    make sure that a message about the string repeats none of them.
    """
    scheme_free = uri.partition("://")[2] or uri
    found: list[str] = []

    colon = scheme_free.find(":")
    at = scheme_free.find("@", colon + 1) if colon >= 0 else -1
    while at >= 0:
        found.append(scheme_free[colon + 1 : at])
        at = scheme_free.find("@", at + 1)

    options = [match for option in SECRET_OPTIONS for match in option.finditer(uri)]
    for match in options:
        value = match.group(2)
        found.append(value)
        found += [pair.partition(":")[2] for pair in unquote_plus(value).split(",")]

    return {text for secret in found for text in (secret, unquote_plus(secret)) if text}


def describe_invalid_uri(uri: str, exc: Exception) -> str:
    """Why the driver refused a connection string, without repeating any of it.

    The driver's reason is kept when it holds none of the string's secrets;
    the string itself is never shown, since one that cannot be parsed cannot
    be redacted reliably either.
    """
    reason = str(exc).strip().rstrip(".")
    if not reason or any(secret in reason for secret in _collect_uri_secrets(uri)):
        reason = "the driver could not parse it"
    text = f"it is not a valid MongoDB connection string ({reason})."
    if "escaped" not in reason and _has_unescaped_user_info(uri):
        text += (
            " A user name or password holding / : @ or % must be "
            "percent-encoded, for instance with urllib.parse.quote_plus."
        )
    return redact_text(text)


def _has_unescaped_user_info(uri: str) -> bool:
    """Whether the part before the last @ holds a character that needs %-encoding."""
    user_info, at, _ = (uri.partition("://")[2] or uri).rpartition("@")
    if not at:
        return False
    return "/" in user_info or "@" in user_info or user_info.count(":") > 1
