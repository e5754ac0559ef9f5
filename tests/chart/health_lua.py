"""Run the Argo CD health check (charts/modeldeploy/files/health.lua) with a real Lua interpreter.

Argo CD runs health checks in gopher-lua, a Lua 5.1 implementation, so the script is run by lupa's
Lua 5.1 runtime: anything newer (integer division, goto, ...) fails here as it would in Argo CD.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lupa import lua51

HEALTH_LUA = Path(__file__).resolve().parents[2] / "charts" / "modeldeploy" / "files" / "health.lua"


def _to_lua(rt: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return rt.table_from({k: _to_lua(rt, v) for k, v in value.items()})
    if isinstance(value, list):
        return rt.table_from([_to_lua(rt, v) for v in value])
    return value


def argocd_health(obj: dict[str, Any], script: str | None = None) -> dict[str, str]:
    """{"status": Healthy|Progressing|Degraded, "message": ...} for a ModelDeployment object."""
    rt = lua51.LuaRuntime(unpack_returned_tuples=True)
    # Argo CD exposes only a sandboxed standard library; the check needs none of os/io/require.
    for name in ("os", "io", "require", "dofile", "loadfile", "load", "loadstring"):
        rt.execute(f"{name} = nil")
    rt.globals().obj = _to_lua(rt, obj)
    result = rt.execute(script if script is not None else HEALTH_LUA.read_text())
    assert result is not None, "health.lua returned nothing"
    return {k: result[k] for k in ("status", "message") if result[k] is not None}
