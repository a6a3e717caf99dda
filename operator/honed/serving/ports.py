"""Loopback ports for a local Triton: check the asked-for ones are free, pick free ones for 0."""

from __future__ import annotations

import socket
from collections.abc import Sequence

from honed.errors import EnvironmentProblem


def claim_ports(host: str, wanted: Sequence[int]) -> tuple[int, int, int]:
    """Check that the given ports are free and replace each 0 by a free port."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for port in wanted:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            try:
                sock.bind((host, port))
            except OSError:
                raise EnvironmentProblem(
                    f"port {port} on {host} is in use",
                    hint="choose another with --http-port/--grpc-port/--metrics-port, or stop what holds it",
                ) from None
            ports.append(sock.getsockname()[1])
    finally:
        for sock in held:
            sock.close()
    return ports[0], ports[1], ports[2]
