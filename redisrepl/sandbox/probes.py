"""Small blocking clients that ask a server whether it answers: a Redis PING and one
HTTP(S) request, both to 127.0.0.1."""

import http.client
import socket
import ssl


def redis_ping(port: int, timeout: float = 1.0) -> bool:
    """Whether the Redis on ``port`` answers PING with PONG."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """One HTTP(S) request to 127.0.0.1:port (TLS name checked as "localhost"); (status, body)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname="localhost")
        head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
        sock.sendall(head.encode("latin-1") + b"\r\n" + (body or b""))
        resp = http.client.HTTPResponse(sock, method=method)
        resp.begin()
        return resp.status, resp.read()
    finally:
        sock.close()
