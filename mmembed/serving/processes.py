"""Processes as Linux's /proc shows them: a server's children, its process group, and their command lines.

The serve watchdog and shutdown need these; psutil would do, but two small readers of /proc are enough.
"""

from __future__ import annotations

import time
from pathlib import Path


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group PGID, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def wait_for_group_exit(pgid: int, timeout_s: float = 5.0) -> None:
    """Give killed stubs (even stopped ones) the moment the kernel needs to end them."""
    deadline = time.monotonic() + timeout_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """Direct children of PID, from /proc (Linux)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
