"""RFC 6455 WebSocket, server side, for the API's streaming subresources.

Recent API servers serve pods/exec, pods/attach and pods/portforward over
WebSockets (kubectl tries them first; the official Python client only speaks
them), so the sandbox answers the HTTP/1.1 ``Upgrade: websocket`` handshake on
the API port and then frames messages itself: the standard library has no
WebSocket server and the framing is small. Server frames are unmasked, client
frames masked; pings are answered with pongs; a close is answered with a close.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import threading

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_MESSAGE = 64 * 1024 * 1024


def is_upgrade(headers) -> bool:
    """Whether a request asks to switch to WebSocket."""
    return (headers.get("Upgrade") or "").lower() == "websocket" and \
        "upgrade" in (headers.get("Connection") or "").lower()


def offered_protocols(headers) -> list[str]:
    """The client's Sec-WebSocket-Protocol list, in its order of preference."""
    values = headers.get_all("Sec-WebSocket-Protocol") if hasattr(headers, "get_all") else \
        [headers.get("Sec-WebSocket-Protocol") or ""]
    return [p.strip() for v in values or [] for p in v.split(",") if p.strip()]


def handshake(headers, protocol: str | None) -> bytes:
    """The 101 Switching Protocols answer to a valid upgrade request."""
    key = (headers.get("Sec-WebSocket-Key") or "").strip()
    accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Accept: {accept}"]
    if protocol:
        lines.append(f"Sec-WebSocket-Protocol: {protocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Closed(Exception):
    """The peer closed the connection (or it broke)."""


class WebSocket:
    """One server-side connection over a handler's rfile/wfile; send() is thread-safe."""

    def __init__(self, rfile, wfile, protocol: str | None = None):
        self.rfile, self.wfile, self.protocol = rfile, wfile, protocol
        self._lock = threading.Lock()
        self.closed = False

    def send(self, payload: bytes, opcode: int = OP_BINARY) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        with self._lock:
            if self.closed and opcode != OP_CLOSE:
                raise Closed("connection closed")
            try:
                self.wfile.write(head + payload)
                self.wfile.flush()
            except (OSError, ValueError) as e:
                self.closed = True
                raise Closed(str(e)) from None

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (once)."""
        if self.closed:
            return
        try:
            self.send(struct.pack("!H", code) + reason.encode()[:120], OP_CLOSE)
        except Closed:
            pass
        self.closed = True

    def _read(self, n: int) -> bytes:
        data = self.rfile.read(n) if n else b""
        if len(data) < n:
            raise Closed("connection closed by peer")
        return data

    def _frame(self) -> tuple[bool, int, bytes]:
        b1, b2 = self._read(2)
        n = b2 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        if n > MAX_MESSAGE:
            raise Closed("frame too large")
        mask = self._read(4) if b2 & 0x80 else b""
        data = self._read(n)
        if mask:
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(data)) if n < 64 else _unmask(data, mask)
        return bool(b1 & 0x80), b1 & 0x0F, data

    def recv(self) -> bytes:
        """The next data message; control frames are handled here. Raises Closed at the end."""
        parts: list[bytes] = []
        while True:
            try:
                fin, op, data = self._frame()
            except (OSError, ValueError) as e:
                raise Closed(str(e)) from None
            if op == OP_PING:
                self.send(data, OP_PONG)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                self.close(struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1000)
                raise Closed("closed by peer")
            parts.append(data)
            if fin:
                return b"".join(parts)


def _unmask(data: bytes, mask: bytes) -> bytes:
    """XOR with the 4-byte mask, a machine word at a time."""
    n = len(data)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
