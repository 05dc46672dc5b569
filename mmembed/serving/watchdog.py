"""The serve watchdog: every few seconds, find what cannot serve and bring it back, touching no more than
that. A broken model (a dead or hung stub) is reloaded alone while the other models serve on; only a
server that is itself gone is restarted whole."""

from __future__ import annotations

import threading
from collections.abc import Callable

from mmembed.serving.server import TritonServer


def check_once(server: TritonServer, log: Callable[[str], None] = print) -> None:
    """One round: reload the broken models, or restart a server that died."""
    problem = server.problem()
    if problem is None:
        return
    broken = server.broken_models()
    if broken:
        log(f"{problem}; reloading {', '.join(broken)} alone ...")
        log(f"recovered: {', '.join(broken)} ready again after {server.recover_models(broken):.1f} s")
    else:
        log(f"{problem}; restarting tritonserver ...")
        log(f"recovered: ready again after {server.recover():.1f} s")


def watch(
    server: TritonServer, interval_s: float, stop: threading.Event | None = None, log: Callable[[str], None] = print
) -> None:
    """Until STOP is set (or forever): check_once every INTERVAL_S."""
    stop = stop or threading.Event()
    while not stop.wait(interval_s):
        check_once(server, log)
