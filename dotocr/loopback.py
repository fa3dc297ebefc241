"""The loopback rule, in one place: which names and addresses mean this machine.

The server binds loopback unless told otherwise and then answers only to loopback Host names; the remote
engine and the CLI's probe never send loopback traffic through a proxy. All three ask here, so they agree.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_ADDRESS = "127.0.0.1"
"""Where our servers listen unless told otherwise, and where our clients look for them: this machine only."""


def is_loopback_host(host: str) -> bool:
    """Whether a host name or address means this machine: localhost and *.localhost, 127.0.0.0/8, ::1.

    Brackets around an IPv6 address (as in a Host header or a URL) and the letter case do not matter.
    """
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    """Whether `url` names this machine."""
    return is_loopback_host(urlsplit(url).hostname or "")
