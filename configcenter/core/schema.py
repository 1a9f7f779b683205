"""A small declarative schema for the config repo's YAML files.

Hand-rolled rather than pydantic so every problem carries the exact file and
line of the offending key and a "did you mean" for misspelt keys.
"""

from __future__ import annotations

import difflib
import fnmatch
import posixpath
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from configcenter.core import kinds
from configcenter.core.errors import ProblemList
from configcenter.core.yamldoc import Path, YamlDoc


class Spec(ABC):
    name = "value"

    @abstractmethod
    def check(self, doc: YamlDoc, value: Any, path: Path, problems: ProblemList) -> None:
        """Record a problem for every way `value` at `path` breaks this spec."""


def _type_error(doc: YamlDoc, path: Path, problems: ProblemList, want: str, value: Any) -> None:
    key = str(path[-1]) if path else "document"
    problems.error(
        doc.source(*path),
        f"'{key}' must be {want}, not {_describe(value)}",
        f"write {key} as {want}",
    )


def short(value: object, limit: int = 40) -> str:
    """A value as messages quote it: its first line, cut short (a file's content must never
    reach an error message whole: a link to /etc/passwd parses as one long string)."""
    text = str(value)
    first = text.split("\n", 1)[0]
    if len(first) > limit or first != text:
        return first[:limit] + "..."
    return first


def _describe(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"a number ({short(value)})"
    if isinstance(value, str):
        return f"a string ('{short(value)}')"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


@dataclass
class Str(Spec):
    name = "a string"

    def check(self, doc: YamlDoc, value: Any, path: Path, problems: ProblemList) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            key = str(path[-1]) if path else "value"
            problems.error(
                doc.source(*path),
                f"'{key}' must be a string, and YAML read {value} as a number",
                f'quote it: {key}: "{value}" (YAML reads 1.10 as the number 1.1)',
            )
        elif not isinstance(value, str) or value == "":
            _type_error(doc, path, problems, "a non-empty string", value)


@dataclass
class Int(Spec):
    minimum: int = 0
    name = "a whole number"

    def check(self, doc: YamlDoc, value: Any, path: Path, problems: ProblemList) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            _type_error(doc, path, problems, "a whole number", value)
        elif value < self.minimum:
            _type_error(doc, path, problems, f"a whole number >= {self.minimum}", value)


@dataclass
class Replicas(Spec):
    """A replica count, or `auto`: an autoscaler owns it, configcenter never sets it."""

    name = "a whole number or auto"

    def check(self, doc: YamlDoc, value: Any, path: Path, problems: ProblemList) -> None:
        if value == "auto":
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            _type_error(doc, path, problems, "a whole number >= 0 or auto", value)


@dataclass
class Bool(Spec):
    name = "true or false"

    def check(self, doc: YamlDoc, value: Any, path: Path, problems: ProblemList) -> None:
        if not isinstance(value, bool):
            _type_error(doc, path, problems, "true or false", value)


@dataclass
class OneOf(Spec):
    choices: tuple[str, ...]

    def check(self, doc: YamlDoc, value: Any, path: Path, problems: ProblemList) -> None:
        if value not in self.choices:
            close = difflib.get_close_matches(str(value), self.choices, n=1)
            hint = (
                f"did you mean '{close[0]}'?" if close else "use one of " + ", ".join(self.choices)
            )
            problems.error(
                doc.source(*path),
                f"'{path[-1]}' is '{short(value)}', which is not one of: {', '.join(self.choices)}",
                hint,
            )


@dataclass
class ListOf(Spec):
    item: Spec

    def check(self, doc: YamlDoc, value: Any, path: Path, problems: ProblemList) -> None:
        if not isinstance(value, list):
            plural = self.item.name.removeprefix("a ").removeprefix("an ") + "s"
            _type_error(doc, path, problems, f"a list of {plural}", value)
            return
        for index, item in enumerate(value):
            self.item.check(doc, item, (*path, index), problems)


@dataclass
class ListOrObj(Spec):
    """Either a list (`verify: [smoke.yaml]`) or a mapping (`verify: {jobs: [...], http: ...}`)."""

    as_list: Spec
    as_map: Spec
    name = "a list or a mapping"

    def check(self, doc: YamlDoc, value: Any, path: Path, problems: ProblemList) -> None:
        if isinstance(value, list):
            self.as_list.check(doc, value, path, problems)
        elif isinstance(value, dict):
            self.as_map.check(doc, value, path, problems)
        else:
            _type_error(doc, path, problems, "a list or a mapping", value)


@dataclass
class MapOf(Spec):
    """A mapping with free keys (platform names, values)."""

    item: Spec | None = None

    def check(self, doc: YamlDoc, value: Any, path: Path, problems: ProblemList) -> None:
        if not isinstance(value, dict):
            _type_error(doc, path, problems, "a mapping", value)
            return
        if self.item is not None:
            for key, item in value.items():
                self.item.check(doc, item, (*path, str(key)), problems)


@dataclass
class SecretOrStr(Spec):
    """A plain string, or `{secret: "env:NAME" | "file:/path" | "k8s:ns/name/key"}`."""

    allow_plain: bool = True

    def check(self, doc: YamlDoc, value: Any, path: Path, problems: ProblemList) -> None:
        if isinstance(value, dict):
            check_secret(doc, value, path, problems)
        elif not self.allow_plain or not isinstance(value, str):
            # Never echo what was written here: it may be the secret itself.
            key = str(path[-1]) if path else "value"
            problems.error(
                doc.source(*path),
                f"'{key}' must be a secret reference, not a plain value",
                f'write {key}: {{secret: "env:NAME"}} and put the value in $NAME',
            )


SECRET_SCHEMES = kinds.REGISTRY.kinds("secret_backend")


def check_secret(doc: YamlDoc, value: Mapping[str, Any], path: Path, problems: ProblemList) -> None:
    if set(value) != {"secret"}:
        problems.error(
            doc.source(*path),
            "a secret reference must have exactly one key, 'secret'",
            'write {secret: "env:NAME"}',
        )
        return
    ref = value["secret"]
    scheme, _, rest = str(ref).partition(":")
    if scheme not in SECRET_SCHEMES or not rest:
        problems.error(
            doc.source(*path, "secret"),
            f"secret reference '{short(ref)}' is not env:NAME, file:/path or "
            "k8s:namespace/name/key",
            'for example {secret: "env:SHOP_DB_PASSWORD"}',
        )
    elif scheme == "k8s" and len(rest.split("/")) != 3:
        problems.error(
            doc.source(*path, "secret"),
            f"secret reference '{short(ref)}' must name namespace/name/key",
            'for example {secret: "k8s:shop-prod/db/password"}',
        )


@dataclass
class Obj(Spec):
    fields: dict[str, Spec]
    required: tuple[str, ...] = ()
    extra: Spec | None = None  # spec for keys not listed (None: unknown keys are errors)
    name: str = field(default="a mapping")

    def check(self, doc: YamlDoc, value: Any, path: Path, problems: ProblemList) -> None:
        if value is None and not self.required:
            return
        if not isinstance(value, dict):
            _type_error(doc, path, problems, "a mapping", value)
            return
        for key in self.required:
            if key not in value:
                where = f"'{path[-1]}'" if path else "this file"
                problems.error(
                    doc.source(*path),
                    f"{where} is missing the required key '{key}'",
                    f"add '{key}:'",
                )
        for key, item in value.items():
            spec = self.fields.get(str(key), self.extra)
            if spec is None:
                close = difflib.get_close_matches(str(key), list(self.fields), n=1, cutoff=0.6)
                hint = (
                    f"did you mean '{close[0]}'?"
                    if close
                    else "known keys: " + ", ".join(sorted(self.fields))
                )
                problems.error(doc.source(*path, str(key)), f"unknown key '{short(key)}'", hint)
                continue
            spec.check(doc, item, (*path, str(key)), problems)


@dataclass
class AdapterBlock(Spec):
    """The settings block of one port's adapter (platform, builder, forge).

    The kinds and the settings they read come from the adapter registry
    (`configcenter.core.kinds`) when the block is checked, so a kind added there
    is accepted here without an edit. `common` holds keys every kind shares.
    """

    port: kinds.Port
    common: dict[str, Spec] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    name: str = field(default="a mapping")

    def check(self, doc: YamlDoc, value: Any, path: Path, problems: ProblemList) -> None:
        registry = kinds.REGISTRY
        fields: dict[str, Spec] = {"kind": OneOf(registry.kinds(self.port))}
        for key, setting in registry.settings(self.port).items():
            fields[key] = _SETTING_SPECS[setting]
        fields.update(self.common)
        Obj(fields, self.required).check(doc, value, path, problems)


_SETTING_SPECS: dict[kinds.SettingType, Spec] = {
    "text": Str(),
    "flag": Bool(),
    "secret": SecretOrStr(allow_plain=False),
    "text_or_secret": SecretOrStr(),
}


@dataclass
class ValueTree(Spec):
    """Free-form values; any `{secret: ...}` inside must still be a valid reference.

    Without this a typo such as `vault:db` would load as a secret no adapter can resolve.
    """

    def check(self, doc: YamlDoc, value: Any, path: Path, problems: ProblemList) -> None:
        if not isinstance(value, dict):
            _type_error(doc, path, problems, "a mapping", value)
            return
        self._walk(doc, value, path, problems)

    def _walk(self, doc: YamlDoc, value: Any, path: Path, problems: ProblemList) -> None:
        # Only maps and lists are walked into: a scalar holds no secret reference.
        if isinstance(value, dict):
            if len(value) == 1 and "secret" in value:
                check_secret(doc, value, path, problems)
                return
            for key, item in value.items():
                if isinstance(item, dict | list):
                    self._walk(doc, item, (*path, str(key)), problems)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict | list):
                    self._walk(doc, item, (*path, index), problems)


ANY_VALUES = ValueTree()


# -- names -----------------------------------------------------------------------------------

#: Environment and service names: DNS-label-like, so they are safe as directory names, Git
#: paths, Kubernetes object names and command-line arguments alike.
NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
NAME_RULE = (
    "lowercase letters, digits and '-', starting and ending with a letter or digit, "
    "at most 40 characters (like a DNS label)"
)
#: Names the deploy repo, the CLI or Git already use for something else.
RESERVED_NAMES = frozenset({"head", "state", "templates", "environments", "all", "none"})


def name_problem(name: object) -> str | None:
    """Why `name` cannot name an environment or a service; None when it can."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        return f"must be {NAME_RULE}"
    if name in RESERVED_NAMES:
        return "is reserved (" + ", ".join(sorted(RESERVED_NAMES)) + ")"
    return None


def suggest_name(name: str) -> str:
    """A valid name close to `name`, for the hint."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.strip().lower()).strip("-")[:40].strip("-")
    return cleaned or "my-service"


@dataclass
class Name(Spec):
    name = "a string"  # "a list of strings": the pattern is checked item by item

    def check(self, doc: YamlDoc, value: Any, path: Path, problems: ProblemList) -> None:
        why = name_problem(value)
        if why is not None:
            problems.error(
                doc.source(*path),
                f"'{short(value)}' cannot be a name: it {why}",
                f"for example '{suggest_name(str(value))}'",
            )


# -- durations and sizes ---------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_HINT = "write e.g. 30s, 5m, 1h30m or 500ms (a bare number is seconds)"


def parse_duration(raw: object) -> float:
    """Seconds in `raw`: 30s, 5m, 1h, 1h30m, 500ms, or a bare number of seconds.

    The one parser of every duration setting; ValueError (with what is accepted) otherwise.
    """
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        seconds = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text and re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h))+", text):
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION.findall(text))
        else:
            raise ValueError(f"'{short(raw)}' is not a duration; {DURATION_HINT}")
    else:
        raise ValueError(f"{_describe(raw)} is not a duration; {DURATION_HINT}")
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"'{short(raw)}' must be longer than zero; {DURATION_HINT}")
    return seconds


@dataclass
class Duration(Spec):
    minimum: float = 0.0
    maximum: float = 7 * 24 * 3600.0
    name = "a duration"

    def check(self, doc: YamlDoc, value: Any, path: Path, problems: ProblemList) -> None:
        key = str(path[-1]) if path else "value"
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            problems.error(doc.source(*path), f"'{key}': {exc}", DURATION_HINT)
            return
        if not self.minimum <= seconds <= self.maximum:
            problems.error(
                doc.source(*path),
                f"'{key}' is {seconds:g}s; it must be between {self.minimum:g}s and "
                f"{self.maximum:g}s",
                DURATION_HINT,
            )


@dataclass
class Limit(Spec):
    """One setting under limits: (a size, a count or a duration), within its hard bounds."""

    setting: str

    def check(self, doc: YamlDoc, value: Any, path: Path, problems: ProblemList) -> None:
        from configcenter.core.limits import SETTINGS, human_size, parse_size

        _, kind, low, high = SETTINGS[self.setting]
        where = doc.source(*path)
        try:
            if kind == "duration":
                number: float = parse_duration(value)
            elif kind == "size":
                number = parse_size(value)
            elif isinstance(value, int) and not isinstance(value, bool):
                number = value
            else:
                raise ValueError(f"'{short(value)}' is not a whole number")
        except ValueError as exc:
            problems.error(where, f"limits.{self.setting}: {exc}")
            return
        if not low <= number <= high:
            shown = (
                (human_size(low), human_size(high))
                if kind == "size"
                else (f"{low:g}s", f"{high:g}s")
                if kind == "duration"
                else (f"{low:g}", f"{high:g}")
            )
            problems.error(
                where,
                f"limits.{self.setting} must be between {shown[0]} and {shown[1]}",
                "these bounds keep a config repo from switching a limit off",
            )


def _limits_spec() -> Obj:
    from configcenter.core.limits import SETTINGS

    return Obj({name: Limit(name) for name in SETTINGS})


# -- secret allowlists -----------------------------------------------------------------------

SECRETS = Obj(
    {
        # file: references may read only files matching one of these globs (absolute paths).
        "file": Obj({"allow": ListOf(Str())}),
        # k8s: references may read only Secrets whose namespace/name matches one of these globs.
        "k8s": Obj({"allow": ListOf(Str())}),
    }
)


def secret_allowed(ref: str, allow_file: list[str], allow_k8s: list[str]) -> str | None:
    """Why reference `ref` is refused by the allowlists; None when it may be used.

    `env:` references are always allowed: the variables are chosen by whoever runs
    configcenter. `file:` and `k8s:` ones reach the host's files and the cluster's
    Secrets, so only what configcenter.yaml's secrets: lists may be read (nothing by default).
    """
    scheme, _, rest = ref.partition(":")
    if scheme == "file":
        if not rest.startswith("/") or posixpath.normpath(rest) != rest:
            return "a file: reference must be a plain absolute path (no '..', '.' or '//')"
        if not any(fnmatch.fnmatchcase(rest, pattern) for pattern in allow_file):
            return "it is not allowed by secrets.file.allow in configcenter.yaml"
    elif scheme == "k8s":
        target = "/".join(rest.split("/")[:2])
        if not any(fnmatch.fnmatchcase(target, pattern) for pattern in allow_k8s):
            return "it is not allowed by secrets.k8s.allow in configcenter.yaml"
    return None


PROJECT = Obj(
    {
        "project": Str(),
        "environments": ListOf(Name()),
        "deploy_repo": Obj(
            {
                "url": Str(),
                "branch": Str(),
                # git network steps (ls-remote, fetch, push) give up after this long;
                # plan, diff-like commands use plan_timeout (short: a plan should not hang).
                "timeout": Duration(minimum=1.0, maximum=3600.0),
                "plan_timeout": Duration(minimum=1.0, maximum=3600.0),
            },
            required=("url",),
        ),
        "registry": Obj(
            {
                "url": Str(),
                "insecure": Bool(),
                "username": SecretOrStr(),
                "password": SecretOrStr(allow_plain=False),
                # Given images (image.ref) on this registry deploy by digest; false: as written.
                "pin_digests": Bool(),
            },
            required=("url",),
        ),
        "builder": AdapterBlock("builder", {"jobs": Int(minimum=1)}),
        "platforms": MapOf(AdapterBlock("platform", required=("kind",))),
        "forge": AdapterBlock("forge", required=("kind",)),
        "promotion": Obj({"allow_skip": Bool(), "approvals": Int()}),
        "run_store": Obj({"url": Str()}),
        "limits": _limits_spec(),
        "secrets": SECRETS,
        # `configcenter serve`: shared secrets only, never plain text in the repo.
        "serve": Obj(
            {
                "webhook_token": SecretOrStr(allow_plain=False),
                "registry_token": SecretOrStr(allow_plain=False),
                "files_key": SecretOrStr(allow_plain=False),
                "api_token": SecretOrStr(allow_plain=False),
                # Git polling of the config repo, the fallback to push webhooks.
                "poll_interval": Duration(minimum=1.0, maximum=24 * 3600.0),
                "public_url": Str(),
                # The console's actions (apply, retry, rollback, heal, promote); false: read-only.
                "actions": Bool(),
                "notifications": ListOf(
                    Obj(
                        {
                            "name": Name(),
                            "kind": OneOf(("webhook", "slack", "email")),
                            "environments": ListOf(Name()),
                            "events": ListOf(
                                OneOf(("failed", "rolled_back", "blocked", "drift", "healed"))
                            ),
                            "url": SecretOrStr(),
                            "token": SecretOrStr(allow_plain=False),
                            "smtp": Obj(
                                {
                                    "host": Str(),
                                    "port": Int(minimum=1),
                                    "username": Str(),
                                    "password": SecretOrStr(allow_plain=False),
                                    "starttls": Bool(),
                                }
                            ),
                            "from": Str(),
                            "to": ListOf(Str()),
                        },
                        required=("kind",),
                    )
                ),
                "basic_auth": Obj(
                    {"username": Str(), "password": SecretOrStr(allow_plain=False)},
                    required=("username", "password"),
                ),
            }
        ),
    },
    required=("project", "environments"),
)

TEMPLATE = Obj(
    {
        "outputs": ListOf(Str()),
        "env": ListOf(Str()),
        "build": Obj(
            {"dockerfile": Str(), "args": ListOf(Str()), "context": Str(), "cache": Bool()}
        ),
        "depends_on": ListOf(Name()),
        "description": Str(),
        # Release stages (configcenter.core.stages): pre-deploy Jobs, verification.
        "hooks": Obj(
            {
                "pre_deploy": ListOf(Str()),
                "timeout": Duration(minimum=1.0, maximum=24 * 3600.0),
                "retention": Duration(minimum=1.0),
            }
        ),
        "verify": ListOrObj(
            ListOf(Str()),
            Obj(
                {
                    "jobs": ListOf(Str()),
                    "http": Obj(
                        {
                            "path": Str(),
                            "expect_status": Int(minimum=100),
                            "timeout": Duration(minimum=0.1, maximum=3600.0),
                        },
                        required=("path",),
                    ),
                }
            ),
        ),
    },
    required=("outputs",),
)

DEFAULTS = Obj({"values": ANY_VALUES})

ENVIRONMENT = Obj(
    {
        "platform": Str(),
        "allow_head": Bool(),
        "auto_apply": Bool(),
        "reconcile": Obj({"interval": Duration(minimum=1.0), "heal": Bool()}),
        "rollout": Obj({"timeout": Duration(minimum=1.0, maximum=24 * 3600.0)}),
        "values": ANY_VALUES,
    }
)

SERVICE = Obj(
    {
        "template": Str(),
        "image": Obj(
            {
                "source": Obj({"repo": Str(), "ref": Str(), "context": Str()}, required=("repo",)),
                "ref": Str(),
            }
        ),
        "replicas": Replicas(),
        "platform": Str(),
        "values": ANY_VALUES,
    },
    required=("template",),
)
