"""The streaming subresources over an upgraded connection: exec, attach and port-forward.

Once server.py has answered the WebSocket handshake, one of these sessions
owns the connection, speaking what the kubelet (behind the API server's
stream translator) speaks:

* **exec / attach** (``v5.channel.k8s.io``, ``v4.channel.k8s.io``): every
  binary message starts with a channel byte -- 0 stdin, 1 stdout, 2 stderr,
  3 error, 4 resize; v5 adds 255, the client's "close this channel" signal
  (how stdin reaches EOF). The server first writes an empty message on the
  lowest writable channel, and at the end a ``Status`` on the error channel:
  ``{status: Success}`` or ``Failure``/``NonZeroExitCode`` with the exit code
  in ``details.causes[{reason: ExitCode, message: "N"}]``; then it closes.
* **port-forward, channel flavour** (``v4.channel.k8s.io``, the official
  Python client): two channels per requested port (data ``2i``, error
  ``2i+1``), each opened by the server with the port as two little-endian
  bytes.
* **port-forward, SPDY flavour** (``SPDY/3.1+portforward.k8s.io``, kubectl
  1.31+): the WebSocket tunnels a SPDY/3.1 session (spdy.py) in which the client
  opens an error and a data stream per connection, headed ``streamType``,
  ``port`` and ``requestID``.

What the pod answers comes from tools.py (the commands) and kubelet.py (the HTTP responder).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator

from . import spdy
from .kubelet import ContainerNotRunning, Kubelet, http_request_length
from .tools import IO, Stdin, exit_status
from .websocket import Closed, WebSocket

log = logging.getLogger(__name__)

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
PORTFORWARD_PROTOCOLS = ("SPDY/3.1+portforward.k8s.io", "v4.channel.k8s.io")


class ChannelSession:
    """The channel framing of remotecommand over one WebSocket; reads stdin in a thread."""

    def __init__(self, ws: WebSocket, stdin: bool, tty: bool):
        self.ws, self.tty = ws, tty
        self.v5 = (ws.protocol or "").startswith("v5.")
        self.stdin = Stdin(open_=stdin)
        self.cancel = threading.Event()
        self.reader = threading.Thread(target=self._read, name="sandbox-stream-reader", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            while True:
                msg = self.ws.recv()
                if not msg:
                    continue
                channel, data = msg[0], msg[1:]
                if channel == STDIN:
                    self.stdin.feed(data)
                elif channel == CLOSE and self.v5 and data[:1] == bytes([STDIN]):
                    self.stdin.close()
        except Closed:
            pass
        finally:
            self.cancel.set()
            self.stdin.close()

    def write(self, channel: int, data: bytes) -> None:
        if self.tty and channel in (STDOUT, STDERR):
            channel, data = STDOUT, data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        try:
            self.ws.send(bytes([channel]) + data)
        except Closed:
            self.cancel.set()

    def io(self) -> IO:
        return IO(self.stdin, lambda b: self.write(STDOUT, b), lambda b: self.write(STDERR, b), self.cancel)

    def open(self, stdout: bool, stderr: bool) -> None:
        """The kubelet's 'connection established' signal: an empty message on the lowest writable channel."""
        self.write(STDOUT if stdout else STDERR if stderr else ERROR, b"")

    def finish(self, status: dict) -> None:
        self.write(ERROR, json.dumps(status).encode())
        self.ws.close()
        self.reader.join(timeout=2)


def serve_exec(ws: WebSocket, kubelet: Kubelet, pod: dict, container: str, argv: list[str],
               opts: dict[str, bool]) -> None:
    session = ChannelSession(ws, opts.get("stdin", False), opts.get("tty", False))
    session.open(opts.get("stdout", True), opts.get("stderr", True))
    try:
        kubelet.check_running(pod, container)
    except ContainerNotRunning as e:
        session.finish(_failure(f"unable to upgrade connection: {e}"))
        return
    try:
        code = kubelet.run(pod, container, argv, session.io())
    except Exception as e:  # a bug in a tool: report it like a runtime error, never hang the client
        log.exception("exec %s in %s failed", argv, pod["metadata"]["name"])
        session.finish(_failure(f"Internal error occurred: error executing command in container: {e}"))
        return
    session.finish(exit_status(code, argv))


def serve_attach(ws: WebSocket, kubelet: Kubelet, pod: dict, container: str, opts: dict[str, bool],
                 output: Callable[[threading.Event], Iterator[tuple[str, bytes]]] | None) -> None:
    """Attach: an ephemeral container's process runs with this stdin; others stream their output."""
    session = ChannelSession(ws, opts.get("stdin", False), opts.get("tty", False))
    session.open(opts.get("stdout", True), opts.get("stderr", True))
    try:
        kubelet.check_running(pod, container)
    except ContainerNotRunning as e:
        session.finish(_failure(f"unable to upgrade connection: {e}"))
        return
    spec = kubelet.container_spec(pod, container) or {}
    ephemeral = any(c.get("name") == container for c in (pod.get("spec") or {}).get("ephemeralContainers") or [])
    if ephemeral:
        argv = (spec.get("command") or []) + (spec.get("args") or []) or ["sh"]
        io = session.io()
        out, err = io.out, io.err
        io.out = lambda b: (kubelet.record(pod, container, b), out(b))
        io.err = lambda b: (kubelet.record(pod, container, b), err(b))
        code = kubelet.run(pod, container, argv, io)
        session.finish(exit_status(code, argv))
        return
    if output is not None:
        for stream, data in output(session.cancel):
            session.write(STDERR if stream == "stderr" else STDOUT, data)
            if session.cancel.is_set():
                break
    session.cancel.wait()
    session.finish({"metadata": {}, "status": "Success"})


def _failure(message: str) -> dict:
    return {"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500}


def forward_error(pod: dict, port: int) -> str:
    """The kubelet's message when nothing listens on the port inside the pod."""
    uid = pod["metadata"].get("uid", "")
    return (f"error forwarding port {port} to pod {uid}, uid : failed to execute portforward in network "
            f"namespace \"/var/run/netns/cni-{uid}\": failed to connect to localhost:{port} inside namespace "
            f"\"{uid}\", IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused IPv6 dial tcp6 "
            f"[::1]:{port}: connect: connection refused ")


class _HttpConn:
    """One forwarded TCP connection to a pod port: bytes in, responder answers out."""

    def __init__(self, kubelet: Kubelet, pod: dict, port: int):
        self.kubelet, self.pod, self.port = kubelet, pod, port
        self.buf = b""
        self.open = True

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out = []
        while self.open:
            n = http_request_length(self.buf)
            if n is None:
                break
            request, self.buf = self.buf[:n], self.buf[n:]
            answer, keep = self.kubelet.http_response(self.pod, self.port, request)
            out.append(answer)
            self.open = keep
        return out


def serve_portforward_channels(ws: WebSocket, kubelet: Kubelet, pod: dict, ports: list[int]) -> None:
    """Port-forward over v4.channel.k8s.io: one connection per port for the WebSocket's lifetime."""
    conns = []
    for i, port in enumerate(ports):
        prefix = port.to_bytes(2, "little")
        ws.send(bytes([2 * i]) + prefix)
        ws.send(bytes([2 * i + 1]) + prefix)
        conns.append(_HttpConn(kubelet, pod, port))
    for i, port in enumerate(ports):
        if not kubelet.listens(pod, port):
            ws.send(bytes([2 * i + 1]) + forward_error(pod, port).encode())
            conns[i].open = False
    try:
        while any(c.open for c in conns):
            msg = ws.recv()
            if len(msg) < 1 or msg[0] % 2 or msg[0] // 2 >= len(conns):
                continue
            conn = conns[msg[0] // 2]
            if not conn.open:
                continue
            for answer in conn.feed(msg[1:]):
                ws.send(bytes([msg[0]]) + answer)
        ws.close()
    except Closed:
        pass


class _Tunnel:
    """Bytes over a WebSocket, as client-go's TunnelingConnection sends them (binary messages)."""

    def __init__(self, ws: WebSocket):
        self.ws = ws

    def write(self, data: bytes) -> None:
        self.ws.send(data)


def serve_portforward_spdy(ws: WebSocket, kubelet: Kubelet, pod: dict) -> None:
    """Port-forward as kubectl 1.31+ sends it: SPDY/3.1 inside the WebSocket."""
    conn = spdy.Connection(_Tunnel(ws).write)
    pairs: dict[str, dict] = {}  # requestID -> {"error": sid, "data": sid, "port": n, "conn": _HttpConn}
    by_stream: dict[int, dict] = {}
    try:
        while True:
            for frame in conn.feed(ws.recv()):
                if frame.type == spdy.SYN_STREAM:
                    h = frame.headers
                    conn.syn_reply(frame.stream_id)
                    try:
                        port = int(h.get("port", "0"))
                    except ValueError:
                        port = 0
                    pair = pairs.setdefault(h.get("requestid", str(frame.stream_id)), {"port": port})
                    pair[h.get("streamtype", "data")] = frame.stream_id
                    by_stream[frame.stream_id] = pair
                    if "error" in pair and "data" in pair:
                        _start_pair(conn, kubelet, pod, pair)
                elif frame.type == 0:
                    pair = by_stream.get(frame.stream_id)
                    if pair is None or frame.stream_id != pair.get("data") or "conn" not in pair:
                        continue
                    http = pair["conn"]
                    if http.open:
                        for answer in http.feed(frame.data):
                            conn.data(pair["data"], answer)
                    if (frame.fin or not http.open) and not pair.get("done"):
                        _end_pair(conn, pair)
                elif frame.type == spdy.PING:
                    conn.ping(frame.extra)
                elif frame.type == spdy.GOAWAY:
                    return
    except (Closed, spdy.ProtocolError):
        pass
    finally:
        ws.close()


def _start_pair(conn: spdy.Connection, kubelet: Kubelet, pod: dict, pair: dict) -> None:
    port = pair["port"]
    if not kubelet.listens(pod, port):
        conn.data(pair["error"], forward_error(pod, port).encode(), fin=True)
        conn.data(pair["data"], fin=True)
        pair["done"] = True
        return
    pair["conn"] = _HttpConn(kubelet, pod, port)


def _end_pair(conn: spdy.Connection, pair: dict) -> None:
    pair["done"] = True
    conn.data(pair["data"], fin=True)
    conn.data(pair["error"], fin=True)

