"""A stage's config: a frozen dataclass of declared options, checked when it is built.

    cfg = SampleConfig(prompts="runs/r/prompts.parquet", output="runs/r/iter-01/samples.parquet",
                       model="models/sft", k=4, sampling=Sampling(temperature=0.7))

Building it converts what needs converting (a str for a path, a list for a tuple, an int for a
float), runs every field's check and the stage's own `validate()`: a bad value is a DnoError
(an `OptionError`) before any work. Nested groups (`group(Api)`) are configs too.

Every config also has a flat view, one name per option, which is what a command line, a run
config file's table and the lineage use: a group's fields take the group's prefix (`judge_`
in dno eval: `judge_temperature`, the flag `--judge-temperature`).

    from_options(SampleConfig, prompts=..., output=..., temperature=0.5)   # flat names
    to_options(cfg) -> {"prompts": ..., "temperature": 0.5, ...}
    to_argv(cfg) -> ["PROMPTS", "-o", "OUT", "--temperature", "0.5"]    # the flags that differ from the defaults
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from ..errors import DnoError
from .options import GROUP, OPTION, Group, Option


class OptionError(DnoError):
    """A bad option value: the config and field it came from, the reason, and the flag named in the message."""

    def __init__(self, owner: type, name: str, value: Any, reason: str, flag: str | None = None):
        self.owner, self.name, self.value, self.reason = owner, name, value, reason
        where = flag or f"{owner.__name__}.{name} ="
        super().__init__(f"{where} {_shown(value)}: {reason}")


def _shown(value: Any) -> str:
    """A value as an error line quotes it: a URL's user:password@ never (the line reaches logs and terminals)."""
    from ..redact import redact_text as redact_url

    return redact_url(repr(value))


class Config:
    """Base of every stage config and option group (subclasses are frozen dataclasses)."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            g: Group | None = f.metadata.get(GROUP)
            if g is not None:
                if isinstance(value, Mapping):  # a plain dict of the group's fields
                    value = g.cls(**value)
                elif not isinstance(value, g.cls):
                    raise OptionError(type(self), f.name, value, f"expected a {g.cls.__name__}")
                object.__setattr__(self, f.name, value)
                continue
            o: Option | None = f.metadata.get(OPTION)
            if o is None:
                raise TypeError(f"{type(self).__name__}.{f.name}: declare it with opt(...), a shared Option or group(...)")
            try:
                value = settle(o, hints[f.name], value)
            except (ValueError, TypeError) as e:
                raise OptionError(type(self), f.name, value, str(e)) from None
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Checks across fields (a stage's own rules); raise DnoError."""

    @classmethod
    def from_options(cls, values: Mapping[str, Any] | None = None, **kw: Any):
        """The config from its options' flat names (those of the command line): see `from_options`."""
        return from_options(cls, values, **kw)


# ---------------------------------------------------------------- types

def settle(o: Option, hint: Any, value: Any) -> Any:
    """A value as a config holds it: normalized, the none-word as None, converted to the declared type,
    checked; ValueError or TypeError with the reason."""
    if o.normalize is not None:
        value = o.normalize(value)
    if o.none_word is not None and value == o.none_word:
        value = None
    value = _coerce(value, hint)
    if o.check is not None:
        o.check(value)
    return value


@functools.cache
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any) -> Any:
    """`value` as the declared type: a path from a str (a URL stays a str), a float from an int, a tuple from a list;
    TypeError for anything else that does not fit (a str for a number, a float for an int)."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise TypeError("a value is required")
        options = [a for a in args if a is not type(None)]
        for a in options:  # exactly one of the types already
            if _is(value, a):
                return value
        errors = []
        for a in options:
            try:
                return _coerce(value, a)
            except TypeError as e:
                errors.append(str(e))
        raise TypeError(errors[0] if errors else f"unexpected {type(value).__name__}")
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise TypeError("expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        return tuple(value)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise TypeError("expected a table of options")
        return dict(value)
    simple = _SIMPLE.get(hint)
    if simple is not None:
        accepts, convert, expected = simple
        if not accepts(value):
            raise TypeError(f"expected {expected}")
        return convert(value)
    return value


def _path(v: str | Path) -> str | Path:
    """A Path; a URL (`s3://bucket/key`) stays the string it is (a Path would make it `s3:/bucket/key`)."""
    from ..storage import is_url

    return v if is_url(v) else Path(v)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# type -> (what it accepts, the conversion, the word an error uses)
_SIMPLE = {Path: (lambda v: isinstance(v, (str, Path)), _path, "a path"),
           bool: (lambda v: isinstance(v, bool), bool, "true or false"),
           # 64 bits at most: every integer option ends up in a C long (torch, numpy, DuckDB), where a larger one
           # is an OverflowError part-way
           int: (lambda v: isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63, int,
                 "an integer of at most 64 bits"),
           float: (_number, float, "a number"),
           str: (lambda v: isinstance(v, str), str, "a string")}


def _is(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint) or hint
    if hint is float:
        return isinstance(value, float)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(origin, type) and isinstance(value, origin)


# ---------------------------------------------------------------- the flat view

@dataclass(frozen=True)
class Flat:
    """One option of a config as the command line sees it."""

    name: str  # the flat name: the field's, or the group's prefix + the field's (a Python identifier)
    path: tuple[str, ...]  # where it lives: ("sampling", "temperature")
    option: Option
    hint: Any
    default: Any  # MISSING: required
    aliases: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        if self.option.argument:
            return self.name.upper()
        return next((f for f in self.option.flags if f.startswith("--")), "--" + self.name.replace("_", "-"))

    @property
    def required(self) -> bool:
        return self.default is MISSING


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


@functools.cache
def flat_fields(cls: type) -> tuple[Flat, ...]:
    """Every option of `cls`, groups flattened, in declaration order."""
    out: list[Flat] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        g: Group | None = f.metadata.get(GROUP)
        if g is not None:
            default = _field_default(f)
            for inner in flat_fields(g.cls):
                if inner.path[0] in g.exclude:
                    continue
                name = inner.option.name or g.prefix + inner.name
                inner_default = inner.default if default is MISSING else _get(default, inner.path)
                inner_aliases = tuple("--" + g.prefix.replace("_", "-") + a.lstrip("-") for a in inner.aliases)
                aliases = tuple((g.aliases or {}).get(inner.path[-1], ())) + inner_aliases
                option = inner.option
                if g.help and inner.path[-1] in g.help:
                    option = dataclasses.replace(option, help=g.help[inner.path[-1]])
                out.append(Flat(name, (f.name, *inner.path), option, inner.hint, inner_default, aliases))
            continue
        o: Option = f.metadata[OPTION]
        out.append(Flat(o.name or f.name, (f.name,), o, hints[f.name], _field_default(f), o.aliases))
    names = [x.name for x in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise TypeError(f"{cls.__name__}: options {sorted(dup)} are declared twice (give a group a prefix)")
    return tuple(out)


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for p in path:
        obj = getattr(obj, p)
    return obj


def flat_of(cls: type, name: str) -> Flat:
    key = name.replace("-", "_")
    for x in flat_fields(cls):
        if x.name == key:
            return x
    raise KeyError(name)


def option_names(cls: type) -> list[str]:
    return [x.name for x in flat_fields(cls)]


def from_options(cls: type, values: Mapping[str, Any] | None = None, *, where: str = "", **kw: Any):
    """A config from flat option names (dashes or underscores); an unknown name or a bad value is one
    OptionError naming the flag (`where`: what the values came from, e.g. "--train-args")."""
    given = {**(values or {}), **kw}
    by_name = {x.name: x for x in flat_fields(cls)}
    for x in flat_fields(cls):  # old names (hidden flags) still accepted
        for a in x.aliases:
            by_name.setdefault(a.lstrip("-").replace("-", "_"), x)
    top: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    for key, value in given.items():
        x = by_name.get(str(key).replace("-", "_"))
        if x is None:
            known = ", ".join(n.replace("_", "-") for n in option_names(cls))
            raise DnoError(f"{where + ': ' if where else ''}unknown option {key!r}; the options are: {known}")
        if len(x.path) == 1:
            top[x.path[0]] = value
        else:
            groups.setdefault(x.path[0], {})[x.path[1]] = value
    missing = [x for x in flat_fields(cls) if x.required and x.path[0] not in top
               and (len(x.path) == 1 or x.path[1] not in groups.get(x.path[0], {}))]
    if missing:
        raise DnoError(f"{where + ': ' if where else ''}missing {', '.join(x.flag for x in missing)}")
    for f in dataclasses.fields(cls):
        if f.name in groups:
            g: Group = f.metadata[GROUP]
            base = _field_default(f)
            kwargs = {k.name: getattr(base, k.name) for k in dataclasses.fields(g.cls)} if base is not MISSING else {}
            kwargs.update(groups[f.name])
            try:
                top[f.name] = g.cls(**kwargs)
            except OptionError as e:
                raise _with_flag(cls, e, (f.name, e.name), where) from None
    try:
        return cls(**top)
    except OptionError as e:
        path = (e.name,) if e.owner is cls else None
        raise _with_flag(cls, e, path, where) from None


def _with_flag(cls: type, e: OptionError, path: tuple[str, ...] | None, where: str) -> OptionError:
    flag = next((x.flag for x in flat_fields(cls) if x.path == path), None) if path else None
    err = OptionError(e.owner, e.name, e.value, e.reason, flag=(f"{where}: " if where else "") + flag if flag else None)
    return err if flag else e


def check_option(cls: type, name: str, value: Any, where: str = "") -> Any:
    """One option's value as the config would hold it (normalized, converted, checked), or an OptionError
    naming the flag: for a partial table of options (a run config file's [train])."""
    try:
        x = flat_of(cls, name)
    except KeyError:
        known = ", ".join(n.replace("_", "-") for n in option_names(cls))
        raise DnoError(f"{where + ': ' if where else ''}unknown option {name!r}; the options are: {known}") from None
    try:
        value = settle(x.option, x.hint, value)
    except (ValueError, TypeError) as e:
        raise OptionError(cls, x.name, value, str(e), flag=(f"{where}: " if where else "") + x.flag) from None
    return value


def to_options(cfg: Any) -> dict[str, Any]:
    """The config's flat view: {flat name: value}."""
    return {x.name: _get(cfg, x.path) for x in flat_fields(type(cfg))}


def replace(cfg: Any, **flat: Any):
    """A copy of `cfg` with some options changed (flat names), checked like a new config."""
    return from_options(type(cfg), {**to_options(cfg), **flat})


def to_argv(cfg: Any) -> list[str]:
    """The command-line arguments that give `cfg`: arguments, required options and every option whose
    value differs from its default (the inverse of the generated command; tests check the round trip)."""
    argv: list[str] = []
    flags: list[str] = []
    for x in flat_fields(type(cfg)):
        value = _get(cfg, x.path)
        if x.option.argument:
            if value is None and not x.required:  # an optional argument left out
                continue
            argv += [_word(x, v) for v in value] if isinstance(value, tuple) else [_word(x, value)]
            continue
        if not x.required and _same(value, x.default):
            continue
        if x.option.stage_options is not None:
            raise DnoError(f"{x.flag}: a mapping of another command's options has no command-line form here")
        long = x.flag
        first = x.option.flags[0] if x.option.flags else long  # -o, -k: as a user types them
        if isinstance(value, bool):
            flags.append(long if value else "--no-" + long[2:])
        elif isinstance(value, tuple) and x.option.cli_type is str:  # one word on the command line: a,b,c
            flags += [first, ",".join(_word(x, v) for v in value)]
        elif isinstance(value, tuple):
            for v in value:
                flags += [first, _word(x, v)]
        else:
            flags += [first, _word(x, value)]
    return argv + flags


def _word(x: Flat, v: Any) -> str:
    if v is None:
        if x.option.none_word is None:
            raise DnoError(f"{x.flag}: None has no command-line form; leave the option out for its default")
        return x.option.none_word
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return a == float(b)
    return type(a) is type(b) and a == b or (a is None and b is None)
