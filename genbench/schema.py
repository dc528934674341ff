"""Typed configs: one dataclass per configurable thing holds every default and, next to each field,
its allowed values; one generic check turns them into genbench's error messages.

    @dataclass
    class VAEConfig:
        latent_dim: int = setting(16, ge=1, doc="size of z")
        likelihood: str = setting("bernoulli", choices=LIKELIHOODS)

``check(VAEConfig, node, "model.")`` returns one message per problem, each naming the key, the value
and what is allowed (``model.latent_dim=0: must be an integer >= 1``). The YAML files under ``conf/``
only select and override: the defaults of a typed config reach Hydra through ``conf/schema/``, which
:mod:`genbench.schema_files` generates from the dataclasses (``python -m genbench.schema_files``) and
a test keeps in sync. A rule between fields that a range cannot state stays a small function beside the
config (e.g. ``sample_steps <= T``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from genbench.checks import is_int, is_number

_MISSING = dataclasses.MISSING


def setting(default: Any = _MISSING, *, doc: str = "", ge: float | None = None, gt: float | None = None,
            lt: float | None = None, le: float | None = None, choices: Sequence[Any] | None = None,
            hint: str = "", null: str = "", allowed: str = "", factory: Any = None) -> Any:  # fmt: skip
    """A dataclass field with its default and its allowed values.

    Args:
        default: the one default of this setting (lists and dicts are copied per instance).
        doc: what it is (generated into the schema files as a comment).
        ge, gt, lt, le: the numeric range.
        choices: the allowed values.
        hint: appended to the error message in parentheses, e.g. ``a penalty weight``.
        null: for an optional field, what null means, e.g. ``no EMA`` (shown as ``null (no EMA)``).
        allowed: the message's wording of the allowed values, where the generated one reads worse.
        factory: builds the default (a mapping taken from another typed config), instead of ``default``.
    """
    meta = {"doc": doc, "ge": ge, "gt": gt, "lt": lt, "le": le, "choices": tuple(choices) if choices else None,
            "hint": hint, "null": null, "allowed": allowed}  # fmt: skip
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def defaults(cls: type) -> dict[str, Any]:
    """The defaults of every field of the typed config ``cls``."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not _MISSING:
            out[f.name] = f.default
        elif f.default_factory is not _MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def _kind(annotation: Any) -> tuple[str, bool]:
    """(``int``/``float``/``bool``/``str``/``any``, optional?) of a field's type."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0] if len(args) == 1 else Any
    for t in (bool, int, float, str):
        if annotation is t:
            return t.__name__, optional
    return "any", optional


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _range_text(m: dict[str, Any]) -> str:
    lo = ("ge", m["ge"]) if m["ge"] is not None else ("gt", m["gt"]) if m["gt"] is not None else None
    hi = ("le", m["le"]) if m["le"] is not None else ("lt", m["lt"]) if m["lt"] is not None else None
    if lo and hi:
        if lo[0] == "gt" and hi[0] == "lt":
            return f" in the open interval ({_fmt(lo[1])}, {_fmt(hi[1])})"
        return f" in {'[' if lo[0] == 'ge' else '('}{_fmt(lo[1])}, {_fmt(hi[1])}{']' if hi[0] == 'le' else ')'}"
    if lo:
        return f" {'>=' if lo[0] == 'ge' else '>'} {_fmt(lo[1])}"
    if hi:
        return f" {'<=' if hi[0] == 'le' else '<'} {_fmt(hi[1])}"
    return ""


def _in_range(v: float, m: dict[str, Any]) -> bool:
    if isinstance(v, float) and math.isnan(v):
        return False
    return ((m["ge"] is None or v >= m["ge"]) and (m["gt"] is None or v > m["gt"])
            and (m["le"] is None or v <= m["le"]) and (m["lt"] is None or v < m["lt"]))  # fmt: skip


def field_error(f: dataclasses.Field, annotation: Any, value: Any, prefix: str) -> str | None:
    """The message for ``value`` of field ``f``, or None when it is allowed."""
    m = f.metadata
    kind, optional = _kind(annotation)
    if value is None and optional:
        return None
    if m.get("choices"):
        ok, allowed = value in m["choices"], f"one of {list(m['choices'])}"
    elif kind == "bool":
        ok, allowed = isinstance(value, bool), "true or false"
    elif kind == "int":
        ok, allowed = is_int(value) and _in_range(value, m), f"an integer{_range_text(m)}"
    elif kind == "float":
        ok, allowed = is_number(value) and _in_range(value, m), f"a number{_range_text(m)}"
    elif kind == "str":
        ok, allowed = isinstance(value, str), "a string"
    else:
        return None
    if ok:
        return None
    allowed = m.get("allowed") or allowed
    if optional:
        meaning = f" ({m['null']})" if m.get("null") else ""
        allowed = f"null{meaning} or {allowed}"
    hint = f" ({m['hint']})" if m.get("hint") else ""
    return f"{prefix}{f.name}={value!r}: must be {allowed}{hint}"


def check(cls: type, node: Mapping[str, Any] | Any, prefix: str, keys: Sequence[str] | None = None) -> list[str]:
    """Every problem of ``node`` (a mapping or DictConfig) against the typed config ``cls``, one message
    each; a key that is absent takes its default. ``keys``: only these fields."""
    hints = typing.get_type_hints(cls)
    errors = []
    for f in dataclasses.fields(cls):
        if keys is not None and f.name not in keys:
            continue
        value = node.get(f.name, defaults(cls).get(f.name)) if hasattr(node, "get") else getattr(node, f.name)
        problem = field_error(f, hints[f.name], value, prefix)
        if problem:
            errors.append(problem)
    return errors
