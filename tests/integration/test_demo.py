"""`make demo`, the README's main job, end to end: checkpoint, export, serve, embed an image and a text."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_beside_a_server_on_the_default_ports(tmp_path: Path) -> None:
    """Triton's default ports are taken (another server, say): the demo picks free ones and still works."""
    with contextlib.ExitStack() as stack:
        for port in (8000, 8001, 8002):
            listener = stack.enter_context(socket.socket())
            with contextlib.suppress(OSError):  # already held by something else: just as good
                listener.bind(("", port))
                listener.listen()
        env = {**os.environ, "WORK": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        result = subprocess.run(
            ["bash", "scripts/demo.sh"], cwd=REPOSITORY_ROOT, env=env, capture_output=True, text=True, timeout=900
        )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "embedding shape (1, 64), L2 norm 1.0000" in result.stdout
    assert "cosine(image, text) = " in result.stdout
