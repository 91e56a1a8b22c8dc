"""Tools: typed functions the model may call, and the built-ins (python, shell, files, plan, sleep).

``@tool`` turns a function into a ``Tool`` (schema from its hints, description from its docstring);
``resolve_tools`` turns an agent's ``tools=[...]`` list into the name -> ``Tool`` map the engine
runs; ``resolve_in_workspace`` keeps file access inside the agent's workspace.
"""

from ._builtins import BUILTIN_TOOLS, PlanStep, resolve_tools
from ._context import Effect, PlanItem, ToolContext
from ._tool import Tool, ToolOutput, tool
from ._workspace import resolve_in_workspace

__all__ = [
    "BUILTIN_TOOLS",
    "Effect",
    "PlanItem",
    "PlanStep",
    "Tool",
    "ToolContext",
    "ToolOutput",
    "resolve_in_workspace",
    "resolve_tools",
    "tool",
]
