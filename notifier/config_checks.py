"""The checks of ``NOTIFY_CONFIG``'s structure, ``${VAR}`` and types, and the words of every
error (``notifier.config`` holds the shape and the loading order; ``notifier.field_checks``
what each field must mean).

Every error is ``SettingsError("<source>: <channel 'desk' | channel #2 | route #1> field
'<field>': <what is wrong>")``: a channel is named by its ``name`` when that name is valid,
else, like a route, by its position in the file counted from 1 (``#1`` is the first
``[[channel]]``). A field's value is quoted only when it is neither a secret nor filled from
the environment; msgspec's own messages (``Expected `str`, got `int` - at `$.chat_id```)
are reworded here, since some of them quote the value.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec

from common.rule_model import RULE_NAME_PATTERN
from common.settings import SettingsError

if TYPE_CHECKING:
    pass

S = TypeVar("S", bound=msgspec.Struct)

# The key, in a loaded struct's ``__dict__``, of {field: the variables it was filled from}.
FROM_ENV: Final = "_from_env"
CHANNEL_NAME_PATTERN: Final = RULE_NAME_PATTERN  # the same shape as a rule's name
# ``${NAME}``; ``$${`` is a literal ``${``; any other ``${`` is an error.
_REFERENCE: Final = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")

_AT: Final = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_PATH: Final = re.compile(r"\.(?P<field>[A-Za-z_]+)(?:\[(?P<index>[0-9]+)\])?")
_MISSING: Final = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_UNKNOWN: Final = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")
_EXPECTED: Final = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`")
_WORDS: Final = {
    "str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
    "array": "an array", "object": "a table", "datetime": "a date-time", "date": "a date",
    "time": "a time",
}


@dataclass
class Item:
    """One ``[[channel]]`` or ``[[route]]`` being checked: how errors name it and which of
    its fields must not be quoted."""

    source: str
    label: str  # "channel 'desk'", "channel #2", "route #1"
    secrets: frozenset[str] = frozenset()
    from_env: dict[str, list[str]] = field(default_factory=dict)

    def fail(self, name: str, reason: str) -> SettingsError:
        return SettingsError(f"{self.source}: {self.label} field {_brief(name, 40)!s}: "
                             f"{reason}")

    def shows(self, name: str) -> bool:
        return name not in self.secrets and name not in self.from_env

    def got(self, name: str, value: object) -> str:
        return f", got {_brief(value)}" if self.shows(name) else ""

    def quoted(self, name: str, value: object) -> str:
        """The value, or what it is when it must not be shown."""
        if name in self.secrets:
            return "the secret"
        return _brief(value) if self.shows(name) else "the value from the environment"

    def noted(self, struct: S) -> S:
        """``struct`` noting which fields came from the environment, for its repr."""
        if self.from_env:
            struct.__dict__[FROM_ENV] = {name: tuple(dict.fromkeys(variables))
                                         for name, variables in self.from_env.items()}
        return struct


def _brief(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 4]}...{text[-1]}"


def _kind(value: object) -> str:
    names = {str: "str", bool: "bool", int: "int", float: "float", list: "array",
             dict: "object"}
    return _words(names.get(type(value), type(value).__name__), got=True)


# --- the document's structure ----------------------------------------------------------


def tables(document: Mapping[str, Any], key: str, source: str) -> list[dict[str, Any]]:
    """The ``[[key]]`` tables of the document (none when it has no such key)."""
    value = document.get(key, [])
    if isinstance(value, dict):
        raise SettingsError(f"{source}: [{key}] is a single table: write [[{key}]] "
                            f"(double brackets), once per {key}")
    if not isinstance(value, list):
        raise SettingsError(f"{source}: {key!r} must be an array of tables ([[{key}]]), "
                            f"got {_kind(value)}")
    for index, table in enumerate(value, 1):
        if not isinstance(table, dict):
            raise SettingsError(f"{source}: {key} #{index} must be a table ([[{key}]]), "
                                f"got {_kind(table)}")
    return value


def channel_label(index: int, name: object) -> str:
    if isinstance(name, str) and CHANNEL_NAME_PATTERN.fullmatch(name):
        return f"channel {name!r}"
    return f"channel #{index}"


def channel_type(item: Item, raw: Mapping[str, Any], types: Mapping[str, object]) -> str:
    kind = raw.get("type")
    valid = ", ".join(types)
    if kind is None:
        raise item.fail("type", f"is missing (one of: {valid})")
    if not isinstance(kind, str) or kind not in types:
        raise item.fail("type", f"{_brief(kind)} is not a channel type (one of: {valid})")
    return kind


def channel_name(item: Item, raw: Mapping[str, Any]) -> None:
    name = raw.get("name")
    if name is None:
        raise item.fail("name", "is missing (1 to 40 of a-z, 0-9, '_' and '-')")
    if not isinstance(name, str):
        raise item.fail("name", f"must be a string, got {_kind(name)}")
    if CHANNEL_NAME_PATTERN.fullmatch(name) is None:
        hint = (" (a name cannot come from the environment: it is how logs and metrics name "
                "the channel)") if "${" in name else ""
        raise item.fail("name", f"{_brief(name)} is not a name: 1 to 40 of a-z, 0-9, '_' "
                        f"and '-'{hint}")


def unique_names(names: list[str], source: str) -> None:
    first: dict[str, int] = {}
    for index, name in enumerate(names, 1):
        if name in first:
            raise SettingsError(f"{source}: channel #{index} field 'name': {name!r} is "
                                f"already the name of channel #{first[name]}")
        first[name] = index


def known_fields(item: Item, raw: Mapping[str, Any], cls: type[msgspec.Struct],
                 what: str) -> None:
    """Unknown keys are reported before any ``${VAR}`` in them is looked up."""
    known = {f.encode_name for f in msgspec.structs.fields(cls)}
    if cls.__struct_config__.tag_field is not None:
        known.add(cls.__struct_config__.tag_field)
    for key in raw:
        if key not in known:
            raise item.fail(key, f"is not a field of {what} (its fields: "
                            f"{', '.join(sorted(known))})")


# --- ${VAR} ------------------------------------------------------------------------------


def expand(item: Item, raw: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``raw`` with every ``${VAR}`` in its strings replaced from ``environ``; notes the
    fields filled so in ``item.from_env``."""
    return {key: _expand(item, key, value, environ) for key, value in raw.items()}


def _expand(item: Item, name: str, value: object, environ: Mapping[str, str]) -> object:
    if isinstance(value, str):
        return _substitute(item, name, value, environ)
    if isinstance(value, list):
        return [_expand(item, name, v, environ) for v in value]
    if isinstance(value, dict):
        return {k: _expand(item, name, v, environ) for k, v in value.items()}
    return value


def _substitute(item: Item, name: str, text: str, environ: Mapping[str, str]) -> str:
    if "$" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        variable = match.group(1)
        if variable is None:
            raise item.fail(name, "'${' starts no ${NAME} (NAME: letters, digits and '_'); "
                            "write '$${' for a literal '${'")
        value = environ.get(variable)
        if value is None:
            raise item.fail(name, f"environment variable {variable} is not set")
        if not value:
            raise item.fail(name, f"environment variable {variable} is empty")
        item.from_env.setdefault(name, []).append(variable)
        return value

    return _REFERENCE.sub(replace, text)


# --- msgspec's checks --------------------------------------------------------------------


def convert(item: Item, data: Mapping[str, Any], cls: type[S]) -> S:
    """``data`` as ``cls``; a number may be written as a string (so ``port = "${PORT}"``
    works: ``strict=False``)."""
    try:
        return msgspec.convert(data, cls, strict=False)
    except msgspec.ValidationError as exc:
        # ``from None``: msgspec's message may quote the value.
        raise _translate(item, str(exc), cls) from None


def _translate(item: Item, message: str, cls: type[msgspec.Struct]) -> SettingsError:
    at = _AT.search(message)
    what = message[:at.start()] if at else message
    if match := _MISSING.fullmatch(what):
        return item.fail(match["field"], "is missing")
    if match := _UNKNOWN.fullmatch(what):
        return item.fail(match["field"], "is not a field here")
    path = _PATH.fullmatch(at["path"]) if at else None
    if path is None:
        return SettingsError(f"{item.source}: {item.label} is not valid")
    name, index = path["field"], path["index"]
    where = f"item {int(index) + 1} " if index is not None else ""
    if match := _EXPECTED.fullmatch(what):
        return item.fail(name, f"{where}must be {_words(match['want'])}, "
                         f"got {_words(match['got'], got=True)}")
    if what.startswith("Invalid enum value"):
        return item.fail(name, f"{where}must be one of: {', '.join(_choices(cls, name))}")
    reason = what[:1].lower() + what[1:] if "'" not in what else "is not valid"
    return item.fail(name, f"{where}{reason}")


def _words(types: str, *, got: bool = False) -> str:
    words = {**_WORDS, "bool": "a boolean"} if got else _WORDS
    parts = [p.strip() for p in types.split("|") if p.strip() != "null"]
    return " or ".join(words.get(p, f"`{p}`") for p in parts)


def _choices(cls: type[msgspec.Struct], name: str) -> list[str]:
    def literals(hint: object) -> list[str]:
        if typing.get_origin(hint) is typing.Literal:
            return [str(a) for a in typing.get_args(hint)]
        return [c for arg in typing.get_args(hint) for c in literals(arg)]

    hints = typing.get_type_hints(cls)
    return literals(hints.get(name)) or ["(a value the file's shape allows)"]
