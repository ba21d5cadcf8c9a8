"""The default MQTT client id: :func:`default_client_id`."""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import socket

__all__ = ["default_client_id"]


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def default_client_id(
    prefix: str,
    *,
    machine_id_file: str | os.PathLike[str] = "/etc/machine-id",
    hostname: str | None = None,
) -> str:
    """A client id unique per host and application that survives restarts.

    ``{prefix}-{hostname}-{hash}``: the hash is 8 hex digits of SHA-256 over the machine id
    (``/etc/machine-id``; the hostname when there is none) and the prefix, so two apps on
    one host, or one app on two cloned SD cards with distinct machine ids, never share an
    id, while a restart reuses it (and so finds its persistent session). Only
    ``[A-Za-z0-9_-]`` is used, and the hostname is shortened to keep within the 23
    characters every MQTT 3.1.1 broker must accept.
    """
    host = hostname if hostname is not None else socket.gethostname()
    try:
        machine = pathlib.Path(machine_id_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        machine = ""
    digest = hashlib.sha256(f"{machine or host}\0{prefix}".encode()).hexdigest()[:8]
    safe_prefix = _UNSAFE.sub("-", prefix).strip("-") or "agent"
    safe_prefix = safe_prefix[:14]  # leaves room for "-" + 8 hex digits within 23
    room = 23 - len(safe_prefix) - 1 - 8 - 1
    safe_host = _UNSAFE.sub("-", host).strip("-")[: max(room, 0)].strip("-")
    if not safe_host:
        return f"{safe_prefix}-{digest}"
    return f"{safe_prefix}-{safe_host}-{digest}"
