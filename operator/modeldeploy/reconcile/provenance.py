"""What exactly runs, and who signed it: per served version, the digest and signer identity the
agents report (/status, see modeldeploy_runtime.provenance), copied into the ModelDeployment status.

Kept apart from compute_status: it only decorates the versions compute_status produced. A value is
shown only when every pod that reports the version agrees on it (pods that disagree mean a rollout
of different bytes under one version number: then nothing is claimed).
"""

from __future__ import annotations

from typing import Any

from modeldeploy.reconcile.status import AgentReport

FIELDS = ("digest", "signer")


def agent_provenance(report: AgentReport | None) -> dict[tuple[str, int], dict[str, str]]:
    seen: dict[tuple[str, int], dict[str, set[str]]] = {}
    for doc in (report.pods if report else {}).values():
        for m in doc.models:
            for v in m.versions:
                if v.state != "Ready":
                    continue
                cur = seen.setdefault((m.name, v.version), {})
                for f in FIELDS:
                    cur.setdefault(f, set()).add(str(getattr(v, f) or ""))
    out: dict[tuple[str, int], dict[str, str]] = {}
    for key, vals in seen.items():
        agreed = {f: next(iter(s)) for f, s in vals.items() if len(s) == 1 and next(iter(s))}
        if agreed:
            out[key] = agreed
    return out


def add_provenance(status: dict[str, Any], report: AgentReport | None) -> dict[str, Any]:
    """Set ``digest``/``signer`` on the Ready versions of ``status["models"]`` (in place)."""
    prov = agent_provenance(report)
    for m in status.get("models") or []:
        for v in m.get("versions") or []:
            info = prov.get((str(m.get("name")), int(v.get("version") or 0)))
            if info and v.get("state") == "Ready":
                v.update(info)
    return status
