"""A one-line TCP server and client run in a netns, for the datapath tests.

The server answers every connection with ``<tag> <peer ip>``: which backend answered and
the client address it saw (after any SNAT); the client retries for 5 s while routes settle.
"""

from __future__ import annotations

import subprocess
import sys

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16); s.settimeout(30)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(f"{sys.argv[2]} {peer[0]}\\n".encode()); c.close()
"""
CLIENT = """
import socket, sys, time
end = time.time() + 5
while True:
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
        break
    except OSError:
        if time.time() > end: raise
        time.sleep(0.1)
print(s.recv(100).decode().strip())
"""


class Listener:
    """A one-line TCP server in a netns, answering ``<tag> <peer ip>``."""

    def __init__(self, netns: str, port: int, tag: str) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c",
                                      SERVER, str(port), tag],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def connect(netns: str, ip: str, port: int) -> tuple[str, str]:
    out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", CLIENT, ip,
                          str(port)], capture_output=True, text=True, timeout=20, check=True)
    tag, peer = out.stdout.split()
    return tag, peer
