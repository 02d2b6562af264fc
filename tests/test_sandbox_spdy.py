"""The SPDY/3.1 framing kubectl's port-forward tunnels through its WebSocket, checked frame by frame."""

from __future__ import annotations

import struct
import zlib

from runbooks_sandbox import spdy


class Client:
    """The client half, written from the SPDY/3 draft: what spdystream puts on the wire."""

    def __init__(self):
        self.deflate = zlib.compressobj(zdict=spdy.DICTIONARY)
        self.inflate = zlib.decompressobj(zdict=spdy.DICTIONARY)

    def syn_stream(self, sid: int, headers: dict[str, str], fin: bool = False) -> bytes:
        raw = struct.pack("!I", len(headers)) + b"".join(
            struct.pack("!I", len(k)) + k.encode() + struct.pack("!I", len(v)) + v.encode() for k, v in headers.items())
        block = self.deflate.compress(raw) + self.deflate.flush(zlib.Z_SYNC_FLUSH)
        body = struct.pack("!IIH", sid, 0, 0) + block
        return struct.pack("!HHI", 0x8003, spdy.SYN_STREAM, (int(fin) << 24) | len(body)) + body

    def headers(self, block: bytes) -> dict[str, str]:
        raw = self.inflate.decompress(block)
        count, pos, out = struct.unpack("!I", raw[:4])[0], 4, {}
        for _ in range(count):
            n = struct.unpack("!I", raw[pos:pos + 4])[0]
            name = raw[pos + 4:pos + 4 + n].decode()
            pos += 4 + n
            n = struct.unpack("!I", raw[pos:pos + 4])[0]
            out[name] = raw[pos + 4:pos + 4 + n].decode()
            pos += 4 + n
        return out


def test_the_dictionary_is_spdy3s():
    # draft 3's dictionary: 1423 bytes, zlib dictionary id 0xe3c6a7c2 (what a client's stream header names)
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2


def test_frames_in_and_out():
    sent: list[bytes] = []
    conn = spdy.Connection(sent.append)
    client = Client()
    wire = client.syn_stream(1, {"streamtype": "error", "port": "8080", "requestid": "0"}) + \
        client.syn_stream(3, {"streamtype": "data", "port": "8080", "requestid": "0"})
    wire += struct.pack("!II", 3, 5) + b"hello"  # DATA on stream 3
    wire += struct.pack("!HHI", 0x8003, spdy.PING, 4) + struct.pack("!I", 1)
    frames = conn.feed(wire[:7]) + conn.feed(wire[7:])  # split mid-frame: buffered until complete
    assert [(f.type, f.stream_id) for f in frames] == [(spdy.SYN_STREAM, 1), (spdy.SYN_STREAM, 3), (0, 3),
                                                       (spdy.PING, 0)]
    assert frames[0].headers == {"streamtype": "error", "port": "8080", "requestid": "0"}
    assert frames[1].headers["streamtype"] == "data"  # the second block uses the same zlib stream
    assert frames[2].data == b"hello" and frames[3].extra == 1

    conn.syn_reply(1)
    conn.syn_reply(3, {"x": "y"})
    conn.data(3, b"world", fin=True)
    conn.ping(1)
    word, length = struct.unpack("!II", sent[0][:8])
    assert word == 0x80030002 and length == len(sent[0]) - 8
    assert struct.unpack("!I", sent[0][8:12])[0] == 1
    assert client.headers(sent[0][12:]) == {}
    assert client.headers(sent[1][12:]) == {"x": "y"}
    assert sent[2] == struct.pack("!II", 3, (spdy.FLAG_FIN << 24) | 5) + b"world"
    assert sent[3] == struct.pack("!HHII", 0x8003, spdy.PING, 4, 1)
