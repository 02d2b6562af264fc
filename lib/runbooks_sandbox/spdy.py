"""Minimal SPDY/3.1 framing, server side: what `kubectl port-forward` needs.

kubectl 1.31+ sends port-forward over a WebSocket whose subprotocol is
``SPDY/3.1+portforward.k8s.io``: the WebSocket only tunnels bytes, and inside
it the client speaks SPDY/3.1 exactly as it used to over an HTTP Upgrade (the
API server's PortForwardWebsockets tunnel hands those bytes to the kubelet).
So the sandbox needs the part of SPDY that client-go's spdystream uses:
SYN_STREAM (compressed headers in), SYN_REPLY (compressed headers out), DATA
with FIN, RST_STREAM, PING (echoed) and GOAWAY. Header blocks are zlib streams
primed with the SPDY/3 dictionary, one stream per direction for the whole
connection. No flow control: spdystream does not send WINDOW_UPDATE-gated data.
"""

from __future__ import annotations

import struct
import threading
import zlib
from dataclasses import dataclass, field

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
RST_PROTOCOL_ERROR, RST_CANCEL = 1, 5

_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base content-encoding "
    "content-language content-length content-location content-md5 content-range content-type date etag "
    "expect expires from host if-match if-modified-since if-none-match if-range if-unmodified-since "
    "last-modified location max-forwards pragma proxy-authenticate proxy-authorization range referer "
    "retry-after server te trailer transfer-encoding upgrade user-agent vary via warning www-authenticate "
    "method get status"
).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
#: The SPDY/3 header-compression dictionary (draft 3, section 2.6.10.1).
DICTIONARY = b"".join(struct.pack("!I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


class ProtocolError(Exception):
    pass


@dataclass
class Frame:
    type: int  # 0 for DATA, else the control frame type
    flags: int
    stream_id: int = 0
    data: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    extra: int = 0  # PING id, RST status, GOAWAY last stream

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


class Connection:
    """A server-side SPDY/3.1 session over a byte stream: feed() bytes in, frames come out."""

    def __init__(self, write):
        self._write = write
        self._lock = threading.Lock()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zdict=DICTIONARY)
        self._buf = b""

    def feed(self, data: bytes) -> list[Frame]:
        """Parse every complete frame now buffered."""
        self._buf += data
        frames = []
        while len(self._buf) >= 8:
            length = int.from_bytes(self._buf[5:8], "big")
            if len(self._buf) < 8 + length:
                break
            head, body = self._buf[:8], self._buf[8:8 + length]
            self._buf = self._buf[8 + length:]
            try:
                frames.append(self._parse(head, body))
            except (zlib.error, struct.error, UnicodeDecodeError) as e:
                raise ProtocolError(f"malformed SPDY frame: {e}") from None
        return frames

    def _parse(self, head: bytes, body: bytes) -> Frame:
        word, flags = struct.unpack("!I", head[:4])[0], head[4]
        if not word & 0x80000000:
            return Frame(0, flags, word & 0x7FFFFFFF, body)
        version, ftype = (word >> 16) & 0x7FFF, word & 0xFFFF
        if version != VERSION:
            raise ProtocolError(f"unsupported SPDY version {version}")
        if ftype == SYN_STREAM:
            sid = struct.unpack("!I", body[:4])[0] & 0x7FFFFFFF
            return Frame(ftype, flags, sid, headers=self._headers(body[10:]))
        if ftype in (SYN_REPLY, HEADERS):
            sid = struct.unpack("!I", body[:4])[0] & 0x7FFFFFFF
            return Frame(ftype, flags, sid, headers=self._headers(body[4:]))
        if ftype == RST_STREAM:
            sid, status = struct.unpack("!II", body[:8])
            return Frame(ftype, flags, sid & 0x7FFFFFFF, extra=status)
        if ftype == PING:
            return Frame(ftype, flags, extra=struct.unpack("!I", body[:4])[0])
        if ftype == GOAWAY:
            return Frame(ftype, flags, extra=struct.unpack("!I", body[:4])[0] & 0x7FFFFFFF)
        return Frame(ftype, flags, data=body)  # SETTINGS, WINDOW_UPDATE, ...: nothing to do

    def _headers(self, block: bytes) -> dict[str, str]:
        raw = self._inflate.decompress(block)
        (count,), pos, out = struct.unpack("!I", raw[:4]), 4, {}
        for _ in range(count):
            n = struct.unpack("!I", raw[pos:pos + 4])[0]
            name = raw[pos + 4:pos + 4 + n].decode("latin-1").lower()
            pos += 4 + n
            n = struct.unpack("!I", raw[pos:pos + 4])[0]
            out[name] = raw[pos + 4:pos + 4 + n].decode("latin-1").split("\0")[0]
            pos += 4 + n
        return out

    def _block(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack("!I", len(headers)) + b"".join(
            struct.pack("!I", len(k)) + k.lower().encode() + struct.pack("!I", len(v)) + v.encode()
            for k, v in headers.items())
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def _control(self, ftype: int, flags: int, body: bytes) -> None:
        self._write(struct.pack("!HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(body)) + body)

    def syn_reply(self, stream_id: int, headers: dict[str, str] | None = None, fin: bool = False) -> None:
        with self._lock:  # the compression context is shared: one header block at a time, in order
            self._control(SYN_REPLY, FLAG_FIN if fin else 0,
                          struct.pack("!I", stream_id) + self._block(headers or {}))

    def data(self, stream_id: int, payload: bytes = b"", fin: bool = False) -> None:
        with self._lock:
            for start in range(0, max(len(payload), 1), 0xFFFF):
                chunk = payload[start:start + 0xFFFF]
                last = start + 0xFFFF >= len(payload)
                self._write(struct.pack("!II", stream_id & 0x7FFFFFFF,
                                        ((FLAG_FIN if fin and last else 0) << 24) | len(chunk)) + chunk)

    def rst(self, stream_id: int, status: int = RST_CANCEL) -> None:
        with self._lock:
            self._control(RST_STREAM, 0, struct.pack("!II", stream_id, status))

    def ping(self, ping_id: int) -> None:
        with self._lock:
            self._control(PING, 0, struct.pack("!I", ping_id))

    def goaway(self, last_stream: int = 0) -> None:
        with self._lock:
            self._control(GOAWAY, 0, struct.pack("!II", last_stream, 0))
