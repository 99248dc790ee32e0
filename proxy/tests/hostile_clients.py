"""Hostile clients for proxy/tests/hardening.rs, in a process of their own (so that the
proxy's process and this one each hold one end of every connection within their own limit
on open files).

Usage: hostile_clients.py HOST PORT N DEADLINE_S

Opens N connections that send nothing, an HTTP/2 preface only, or half a header line (in
turn), prints "opened", then waits until the peer has closed every one of them or DEADLINE_S
seconds pass, and prints "closed K of N".
"""
import resource
import selectors
import socket
import sys
import time

host, port, n, deadline = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < n + 256:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 256), hard))
sel = selectors.DefaultSelector()
for i in range(n):
    s = socket.create_connection((host, port))
    if i % 3 == 1:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    elif i % 3 == 2:
        s.sendall(b"GET /half HTTP/1.1\r\nHo")
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
print("opened", flush=True)
closed = 0
end = time.monotonic() + deadline
while closed < n and time.monotonic() < end:
    for key, _ in sel.select(timeout=0.5):
        s = key.fileobj
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not data:
            sel.unregister(s)
            s.close()
            closed += 1
print(f"closed {closed} of {n}", flush=True)
