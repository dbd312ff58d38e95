"""Strict input for the MCP tools: arguments are taken as their schema types them, and an error
never echoes a long argument back.

pydantic's lax mode would take ``"no"`` or ``1`` for a boolean and ``"5"`` for an integer: a
client's mistake would become a decision it did not make (``resume: "no"`` resuming). Every
tool's argument model is made strict and refuses unknown keys. The SDK words a validation
error with pydantic's text; :class:`StrictTool` words it itself, quoting at most
:data:`~tmops_core.workspace.layout.SHOWN_CHARS` characters of a bad value, and cuts any long
argument out of every other error it raises.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import FuncMetadata
from pydantic import ValidationError

from tmops_core.workspace.layout import SHOWN_CHARS, shown

__all__ = ["StrictTool", "make_strict"]


class _ArgumentsAsSent(FuncMetadata):
    """The SDK decodes JSON inside a string argument ("null" becomes null, so a workspace
    "null" would be the default one): here a string stays the string that was sent."""

    def pre_parse_json(self, data: dict[str, Any]) -> dict[str, Any]:
        return dict(data)


def make_strict(tool: Tool) -> Tool:
    """Refuse unknown arguments and say so in the schema (additionalProperties: false); take
    every argument only as its type (no "no" for false, no "5" for 5, no "null" for null)."""
    metadata = tool.fn_metadata
    model = metadata.arg_model
    model.model_config["extra"] = "forbid"
    model.model_config["strict"] = True
    model.model_rebuild(force=True)
    tool.fn_metadata = _ArgumentsAsSent.model_construct(
        **{name: getattr(metadata, name) for name in FuncMetadata.model_fields}
    )
    tool.parameters = model.model_json_schema(by_alias=True)
    return tool


def _problem(error: Any) -> str:
    """One pydantic error as ``argument: what is wrong, got <the value, cut>``."""
    # an unknown argument's name is the client's text too: cut like a value
    where = ".".join(_cut(str(part)) for part in error["loc"]) or "arguments"
    if error["type"] == "missing":
        return f"{where}: {error['msg']}"
    return f"{where}: {error['msg']}, got {shown(error['input'])}"


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


#: longer than any path or name: a value no message should hold whole
_NO_NAME_CHARS = 4096


def _cut_long_values(message: str, arguments: dict[str, Any]) -> str:
    # The service's own errors cut what they quote; this is the net for one that does not. A
    # long but legitimate value (a deep workspace path the message names) is left as it is.
    for value in arguments.values():
        if isinstance(value, str) and len(value) > _NO_NAME_CHARS:
            message = message.replace(repr(value), shown(value)).replace(value, shown(value))
    return message


class StrictTool(Tool):
    """A tool whose errors name the bad argument and never quote more than a bit of it."""

    async def run(self, arguments: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().run(arguments, *args, **kwargs)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                problems = "; ".join(_problem(error) for error in cause.errors(include_url=False))
                raise ToolError(
                    f"Error executing tool {self.name}: invalid arguments: {problems}"
                ) from cause
            text = str(exc)
            cut = _cut_long_values(text, arguments)
            if cut == text:
                raise
            raise ToolError(cut) from cause
