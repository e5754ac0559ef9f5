"""Free loopback ports for the servers the tests, the demo and the benchmarks start."""

from __future__ import annotations

import socket

from modeldeploy_runtime.ports import free_port, free_ports


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(64)
    assert len(set(ports)) == 64  # every socket stays bound until all are chosen
    socks = []
    try:
        for p in ports:
            s = socket.socket()
            s.bind(("127.0.0.1", p))  # and each is free again afterwards
            socks.append(s)
    finally:
        for s in socks:
            s.close()
    assert 0 < free_port() < 65536
