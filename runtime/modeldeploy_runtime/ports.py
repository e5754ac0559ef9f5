"""Free TCP ports on loopback for the servers we start (Triton, the agent, the local control plane).

Each port is found by binding port 0 and reading what the kernel picked. Asking several times in a
row, one socket at a time, can return the same port twice (the first socket is closed before the
second is bound); :func:`free_ports` keeps every socket bound until all are chosen, so the ports it
returns are distinct.
"""

from __future__ import annotations

import contextlib
import socket


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports that are free on ``host`` right now."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]


def free_port(host: str = "127.0.0.1") -> int:
    """One TCP port that is free on ``host`` right now."""
    return free_ports(1, host)[0]
