"""Hypothesis strategies for MCP tool calls, built from the tools' own input schemas.

The tools come from ``list_tools()`` at run time, so a tool added to the server is fuzzed too:
its properties get values of their schema's type, and the properties whose meaning tmops knows
(feature, workspace, phase, provider) get hostile values that must be refused.

A *valid-shaped* call has every property of the right type (it may still be refused: no such
feature, wrong state...). An *invalid* call has exactly one thing wrong, chosen from: an unknown
key, a wrong JSON type, a required property missing, a feature name outside the pattern, a
workspace that is not an existing absolute folder, an unknown phase or provider, a huge string,
a NUL byte. It must be answered with ``isError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from mcp.types import Tool

from .conftest import READY_FEATURE

FEATURE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,18}[a-z0-9]")
#: over any name's length, and big enough to find a copy or a regex that does not scale
HUGE = 200_000
#: names for which tmops_init_feature may create a feature (each one is a git worktree)
INIT_POOL = (READY_FEATURE, "fuzz-other", "f00")

Args = dict[str, Any]
Call = tuple[str, Args, str]  # tool, arguments, what is wrong with them ("" when nothing)


@dataclass(frozen=True, repr=False)
class Context:
    """What the strategies need to know about the server under test."""

    def __repr__(self) -> str:  # shown with every failing example: keep it short
        return f"Context({len(self.tools)} tools, workspace={self.workspace!r})"

    tools: Sequence[Tool]
    workspace: str
    a_file: str  # an existing file: a path that exists but is not a folder
    phases: frozenset[str]
    providers: frozenset[str]


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(type(value), "null")


def allowed_types(schema: dict[str, Any]) -> set[str] | None:
    """The JSON types a property accepts, or None if its schema does not say."""
    if "anyOf" in schema:
        found: set[str] = set()
        for option in schema["anyOf"]:
            option_types = allowed_types(option)
            if option_types is None:
                return None
            found |= option_types
        return found
    if "enum" in schema or "const" in schema:
        return {json_type(v) for v in schema.get("enum", [schema.get("const")])}
    kind = schema.get("type")
    if kind is None:
        return None
    kinds = set(kind) if isinstance(kind, list) else {kind}
    return kinds | ({"integer"} if "number" in kinds else set())


_ANY_JSON_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)
)
ANY_JSON = st.recursive(
    _ANY_JSON_SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)

feature_names = st.from_regex(FEATURE_NAME, fullmatch=True)
_HOSTILE_NAMES = st.sampled_from(
    [
        "../../../etc/passwd", "..", ".", "", "a", "ab", "a" * 21, "-abc", "abc-", "Auth-api",
        "auth_api", "auth api", "auth-api\n", "\nauth-api", "auth\0api", "auth/api",
        "auth\\api", "café-api", "auth-api ", "--upload-pack=x", "-c", "feature/x",
        "\uff41\uff42\uff43",
    ]
)  # fmt: skip
bad_feature_names = st.one_of(_HOSTILE_NAMES, st.text(max_size=40)).filter(
    lambda name: FEATURE_NAME.fullmatch(name) is None
)


def bad_workspaces(context: Context) -> st.SearchStrategy[str]:
    """Path-like strings that are not the absolute path of an existing folder."""
    here = context.workspace
    return st.one_of(
        st.sampled_from(
            [
                "", ".", "..", "~", "repo", "relative/path", "./", "../" * 20, "/nonexistent",
                "/nonexistent/deeper", f"{here}/no-such-folder", f"{here}\0", f"\0{here}",
                context.a_file, f"{context.a_file}/", "/" + "a" * 5000, "/a" * 3000,
                "file:///tmp", "C:\\Windows",
            ]
        ),
        st.text(max_size=60).map(lambda tail: f"{here}/missing-{tail}".replace("\0", "")),
        st.text(max_size=60).filter(lambda text: not text.startswith("/")),
    )  # fmt: skip


def _huge(draw: st.DrawFn) -> str:
    # not "/": "/" * HUGE is the root folder, a valid workspace
    return draw(st.sampled_from("a-.\0\n\u00e9")) * HUGE


def with_nul(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(text, text).map(lambda parts: f"{parts[0]}\0{parts[1]}")


@st.composite
def _valid_value(
    draw: st.DrawFn, name: str, schema: dict[str, Any], tool: str, context: Context
) -> Any:
    if name == "feature":
        if tool == "tmops_init_feature":
            return draw(st.sampled_from(INIT_POOL))
        return draw(st.one_of(st.just(READY_FEATURE), feature_names))
    if name == "workspace":
        return draw(st.sampled_from([None, context.workspace]))
    if name == "phase":
        choices = sorted(context.phases)
        return draw(st.sampled_from(choices if "anyOf" not in schema else [None, *choices]))
    if name == "provider":
        return None  # the configured one: any other could be a provider that runs something
    if "enum" in schema:
        return draw(st.sampled_from(schema["enum"]))
    return draw(_value_of_types(allowed_types(schema)))


def _value_of_types(types: set[str] | None) -> st.SearchStrategy[Any]:
    by_type: dict[str, st.SearchStrategy[Any]] = {
        "string": st.text(max_size=40),
        "boolean": st.booleans(),
        "integer": st.integers(-(2**40), 2**40),
        "number": st.floats(allow_nan=False, allow_infinity=False),
        "null": st.none(),
        "array": st.lists(_ANY_JSON_SCALAR, max_size=3),
        "object": st.dictionaries(st.text(max_size=8), _ANY_JSON_SCALAR, max_size=3),
    }
    if types is None:
        return ANY_JSON
    return st.one_of(*(by_type[kind] for kind in sorted(types) if kind in by_type))


@st.composite
def valid_arguments(draw: st.DrawFn, tool: Tool, context: Context) -> Args:
    """Every required property and some optional ones, each of the right type."""
    schema = tool.input_schema
    required = set(schema.get("required", []))
    args: Args = {}
    for name, prop in schema.get("properties", {}).items():
        if name in required or draw(st.booleans()):
            args[name] = draw(_valid_value(name, prop, tool.name, context))
    return args


def valid_calls(context: Context) -> st.SearchStrategy[Call]:
    return st.sampled_from(list(context.tools)).flatmap(
        lambda tool: valid_arguments(tool, context).map(lambda args: (tool.name, args, ""))
    )


#: values a lax validator turns into another type ("yes" -> True, 1 -> True, 1.0 -> 1...)
_COERCIBLE = st.sampled_from(
    ["true", "false", "yes", "no", "on", "off", "1", "0", 1, 0, 1.0, 0.0, "null", "", [], {}]
)


@st.composite
def _wrong_type(draw: st.DrawFn, schema: dict[str, Any]) -> Any:
    accepted = allowed_types(schema) or set()
    return draw(st.one_of(_COERCIBLE, ANY_JSON).filter(lambda v: json_type(v) not in accepted))


Mutation = Callable[[st.DrawFn, Tool, Args, Context], str]


def _unknown_key(draw: st.DrawFn, tool: Tool, args: Args, context: Context) -> str:
    known = set(tool.input_schema.get("properties", {}))
    key = draw(st.text(min_size=1, max_size=20).filter(lambda k: k not in known))
    args[key] = draw(ANY_JSON)
    return f"unknown key {key!r}"


def _wrong_type_of_property(draw: st.DrawFn, tool: Tool, args: Args, context: Context) -> str:
    properties = tool.input_schema.get("properties", {})
    name = draw(st.sampled_from(sorted(properties)))
    args[name] = draw(_wrong_type(properties[name]))
    return f"{name} of the wrong type"


def _missing_required(draw: st.DrawFn, tool: Tool, args: Args, context: Context) -> str:
    name = draw(st.sampled_from(sorted(tool.input_schema["required"])))
    del args[name]
    return f"{name} missing"


def _hostile_value(draw: st.DrawFn, tool: Tool, args: Args, context: Context) -> str:
    """A value of the right type that tmops must refuse for what it means."""
    properties = tool.input_schema.get("properties", {})
    name = draw(st.sampled_from(sorted(set(properties) & set(HOSTILE))))
    kind = draw(st.sampled_from(["meaning", "huge", "nul"]))
    if kind == "huge":
        args[name] = _huge(draw)
    elif kind == "nul":
        args[name] = draw(with_nul(st.text(max_size=20)))
    else:
        args[name] = draw(HOSTILE[name](context))
    return f"{name}: {kind}"


#: the properties whose meaning tmops checks, and values of the right type it must refuse
HOSTILE: dict[str, Callable[[Context], st.SearchStrategy[str]]] = {
    "feature": lambda context: bad_feature_names,
    "workspace": bad_workspaces,
    "phase": lambda context: st.text(max_size=40).filter(lambda p: p not in context.phases),
    "provider": lambda context: st.text(max_size=40).filter(lambda p: p not in context.providers),
    "runType": lambda context: st.text(max_size=20).filter(lambda r: r not in ("initial", "retry")),
}


def _mutations(tool: Tool) -> list[Mutation]:
    schema = tool.input_schema
    found: list[Mutation] = [_unknown_key]
    if schema.get("properties"):
        found.append(_wrong_type_of_property)
    if schema.get("required"):
        found.append(_missing_required)
    if set(schema.get("properties", {})) & set(HOSTILE):
        found.append(_hostile_value)
    return found


@st.composite
def _invalid_call(draw: st.DrawFn, tool: Tool, context: Context) -> Call:
    args = draw(valid_arguments(tool, context))
    if "feature" in args:
        args["feature"] = READY_FEATURE  # refused for the mutation, not a missing feature
    mutate = draw(st.sampled_from(_mutations(tool)))
    why = mutate(draw, tool, args, context)
    return tool.name, args, why


def invalid_calls(context: Context) -> st.SearchStrategy[Call]:
    return st.sampled_from(list(context.tools)).flatmap(lambda tool: _invalid_call(tool, context))
