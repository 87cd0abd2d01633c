"""``bert4x serve`` in a child process on a free local port, for tests and load benchmarks."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Sequence, Tuple
from urllib.error import URLError
from urllib.request import urlopen


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def start_server(serve_arguments: Sequence[str], cwd=None,
                 timeout: float = 180.0) -> Tuple[subprocess.Popen, str]:
    """Start ``bert4x serve ARGUMENTS --port <free>`` and wait until ``/health`` answers;
    returns the process and its base URL. Its output is piped (read it if it dies)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bert4x.cli", "serve", *serve_arguments, "--port", str(port)],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bert4x serve exited with {process.returncode}:\n"
                               f"{process.stdout.read()}")
        try:
            with urlopen(url + "/health", timeout=1) as response:
                if response.status == 200:
                    return process, url
        except (URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"bert4x serve did not answer /health within {timeout:g} s")
