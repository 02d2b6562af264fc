"""What a sandbox pod can run: the tools the kubelet answers exec with.

The sandbox has no containers, so nothing is really executed. The kubelet
answers exec with a small, explicit set of tools that behave as in a minimal
(busybox-like) image, computed from the sandbox's own state, so a runbook
that looks *inside* a pod (its environment, its resolver, what it can reach)
sees the same thing it would see on a cluster:

==============================  =================================================================
command                         answer
==============================  =================================================================
``env``, ``printenv [NAME]``    the container's env (``value``, ``valueFrom`` configMap/secret/
                                field refs, ``envFrom``), plus what the kubelet injects: PATH,
                                HOSTNAME, HOME, ``KUBERNETES_*`` and, with ``enableServiceLinks``
                                (the default), ``{SVC}_SERVICE_HOST``/``_PORT``/``_PORT_N_PROTO``...
                                for the Services of the pod's namespace that existed when it started
``cat FILE...``                 ``/etc/resolv.conf`` (from ``dnsPolicy``/``dnsConfig``; ClusterFirst:
                                ``search NS.svc.cluster.local svc.cluster.local cluster.local``, the
                                cluster DNS Service IP, ``options ndots:5``), ``/etc/hosts``,
                                ``/etc/hostname``, mounted ConfigMap/Secret files (also projected) and
                                ``/var/run/secrets/kubernetes.io/serviceaccount/namespace``;
                                no FILE: stdin
``nslookup NAME``,              the pod's stub resolver: its resolv.conf's nameserver, search list
``getent hosts NAME``           and ndots. With the sandbox's DNS servers running, questions go to
                                the real cluster DNS server (BIND, fed from Services and
                                EndpointSlices), other zones to their authoritative server (no
                                Internet: unknown zones are NXDOMAIN); without them, the Service
                                table answers (ClusterIP; headless: the ready endpoint IPs;
                                ExternalName: a CNAME; ``A-B-C-D.NS.pod.cluster.local``)
``dig [@SERVER] [+OPTS]         BIND's dig over the same resolver: several ``NAME [TYPE]`` queries per
NAME [TYPE]... [-x IP]``        command line, ``+[no]all``/``cmd``/``comments``/``question``/
                                ``answer``/``stats``, ``+short``, ``+search``/``+showsearch`` (the
                                search list; off by default), exit 9 when no server answers
``wget [-q] [-O FILE] URL``,    an HTTP request routed as the cluster would: a Service's ClusterIP and
``curl [-sSfi] [-o FILE]        port to a ready endpoint's targetPort, or a pod IP and container
[-w FMT] [-X M] URL``           port, answered by the pod's built-in responder (JSON naming the pod,
                                port, host and path, like the ingress's); no ready endpoint: refused
``sh -c SCRIPT``, ``sh`` (stdin) a tiny shell over these tools: ``;``, ``&&``, ``||``, ``|``,
                                ``$VAR``, ``exit N``, ``echo``
``true``, ``false``,            as usual (``sleep`` really waits, until the client goes away)
``sleep N``, ``hostname``
==============================  =================================================================

The state these answers come from (environment, files, resolver, routing,
responder) is read by kubelet.py; this module is the command table and a tiny
shell. Commands may be named by path (``/bin/sh``, ``/usr/bin/env``). Anything else
exits 127 with the container runtime's message (containerd/runc:
``OCI runtime exec failed: exec failed: unable to start container process:
exec: "foo": executable file not found in $PATH: unknown``). A container that
is not running (crash-looping, waiting for its image) cannot be exec'd into:
``unable to upgrade connection: container not found ("NAME")``.
"""

from __future__ import annotations

import ipaddress
import json
import queue
import re
import shlex
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from .kubelet import DEFAULT_DNS_IP, Kubelet

BIN_DIRS = ("/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin")


class Stdin:
    """A pipe from the client: feed() from the stream reader, read()/readline() by the tool."""

    def __init__(self, open_: bool = True):
        self._q: queue.Queue[bytes | None] = queue.Queue()
        self._buf = b""
        self._eof = not open_

    def feed(self, data: bytes) -> None:
        if data:
            self._q.put(data)

    def close(self) -> None:
        self._q.put(None)

    def _more(self) -> bool:
        if self._eof:
            return False
        item = self._q.get()
        if item is None:
            self._eof = True
            return False
        self._buf += item
        return True

    def readline(self) -> bytes:
        while b"\n" not in self._buf and self._more():
            pass
        line, sep, rest = self._buf.partition(b"\n")
        self._buf = rest
        return line + sep

    def read(self) -> bytes:
        while self._more():
            pass
        data, self._buf = self._buf, b""
        return data


class IO:
    """A tool's stdin, stdout and stderr, and the event set when the client has gone."""

    def __init__(self, stdin: Stdin | None = None, out: Callable[[bytes], None] | None = None,
                 err: Callable[[bytes], None] | None = None, cancel: threading.Event | None = None):
        self.stdin = stdin or Stdin(open_=False)
        self.out = out or (lambda b: None)
        self.err = err or (lambda b: None)
        self.cancel = cancel or threading.Event()

    def print(self, text: str = "") -> None:
        self.out((text + "\n").encode())

    def eprint(self, text: str) -> None:
        self.err((text + "\n").encode())


class _Exit(Exception):
    def __init__(self, code: int):
        self.code = code


def not_found_message(cmd: str) -> str:
    return (f'OCI runtime exec failed: exec failed: unable to start container process: exec: "{cmd}": '
            "executable file not found in $PATH: unknown")


def run(kubelet: Kubelet, pod: dict, container: str, argv: list[str], io: IO) -> int:
    """Run one command in the container; returns its exit code."""
    ctx = _Ctx(kubelet, pod, container)
    try:
        return ctx.call(argv, io)
    except _Exit as e:
        return e.code


class _Ctx:
    """One container's view while running tools: env, files, resolver."""

    def __init__(self, kubelet: Kubelet, pod: dict, container: str):
        self.k, self.pod, self.container = kubelet, pod, container
        self.env = dict(kubelet.environment(pod, container))
        self.status = 0

    def call(self, argv: list[str], io: IO) -> int:
        if not argv:
            return 0
        cmd = argv[0]
        name = cmd.rsplit("/", 1)[-1] if "/" in cmd and cmd.rsplit("/", 1)[0] in BIN_DIRS else cmd
        tool = TOOLS.get(name)
        if tool is None:
            io.eprint(not_found_message(cmd) if "/" not in cmd else
                      not_found_message(cmd).replace("executable file not found in $PATH",
                                                     "no such file or directory"))
            return 127
        return tool(self, argv[1:], io)

    # ---- the shell -------------------------------------------------------------------------

    def shell(self, script: str, io: IO) -> int:
        for line in script.split("\n"):
            for cmds in _split_list(line):
                self.status = self._run_list(cmds, io)
        return self.status

    def _run_list(self, items: list[tuple[str, list[list[str]]]], io: IO) -> int:
        status = self.status
        for op, pipeline in items:
            if (op == "&&" and status != 0) or (op == "||" and status == 0):
                continue
            status = self._pipeline(pipeline, io)
            self.status = status
        return status

    def _pipeline(self, pipeline: list[list[str]], io: IO) -> int:
        stdin = io.stdin
        status = 0
        for i, words in enumerate(pipeline):
            argv = [w for word in words for w in _expand_word(word, self)]  # expanded as each command runs
            last = i == len(pipeline) - 1
            buf: list[bytes] = []
            sub = IO(stdin, io.out if last else buf.append, io.err, io.cancel)
            if argv and argv[0] == "exit":
                raise _Exit(int(argv[1]) if len(argv) > 1 and argv[1].isdigit() else self.status)
            status = self.call(argv, sub)
            if not last:
                stdin = Stdin()
                stdin.feed(b"".join(buf))
                stdin.close()
        return status


def _split_list(line: str) -> list[list[tuple[str, list[list[str]]]]]:
    """One shell line as lists of (operator, pipeline of raw words); each list runs after the previous."""
    lex = shlex.shlex(line, posix=False, punctuation_chars=";&|")
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        tokens = list(lex)
    except ValueError as e:
        raise _Exit(2) from e
    out: list[list[tuple[str, list[list[str]]]]] = [[]]
    op, pipeline, argv = "", [], []
    for tok in tokens + [";"]:
        if tok in (";", "&&", "||", "|", "&"):
            pipeline.append(argv)
            argv = []
            if tok == "|":
                continue
            if any(pipeline):
                out[-1].append((op, [a for a in pipeline if a]))
            pipeline = []
            if tok in (";", "&"):
                out.append([])
                op = ""
            else:
                op = tok
        else:
            argv.append(tok)
    return [x for x in out if x]


def _expand_word(word: str, ctx: _Ctx) -> list[str]:
    """A raw word after $NAME, ${NAME} and $? expansion (not inside single quotes) and quote removal."""
    out, quote, i = [], "", 0
    while i < len(word):
        ch = word[i]
        if ch == "'" and quote != '"':
            quote = "" if quote == "'" else "'"
        elif ch == '"' and quote != "'":
            quote = "" if quote == '"' else '"'
        elif ch == "$" and quote != "'":
            m = re.match(r"\$(\?|[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})", word[i:])
            if m:
                key = m.group(1).strip("{}")
                value = str(ctx.status) if key == "?" else ctx.env.get(key, "")
                out.append(shlex.quote(value) if not quote and value else value)
                i += len(m.group(0))
                continue
        out.append(ch)
        i += 1
    try:
        return shlex.split("".join(out))
    except ValueError:
        return ["".join(out)]


# ---- the tools (argv without the command name) -----------------------------------------------

def _env(ctx: _Ctx, args: list[str], io: IO) -> int:
    while args and "=" in args[0] and not args[0].startswith("="):
        key, _, value = args[0].partition("=")
        ctx.env[key] = value
        args = args[1:]
    if args:  # env [NAME=VALUE]... COMMAND: run it with that environment
        return ctx.call(args, io)
    for k, v in ctx.env.items():
        io.print(f"{k}={v}")
    return 0


def _printenv(ctx: _Ctx, args: list[str], io: IO) -> int:
    if not args:
        return _env(ctx, [], io)
    status = 0
    for name in args:
        if name in ctx.env:
            io.print(ctx.env[name])
        else:
            status = 1
    return status


def _cat(ctx: _Ctx, args: list[str], io: IO) -> int:
    if not args or args == ["-"]:
        while True:
            line = io.stdin.readline()
            if not line:
                return 0
            io.out(line)
    files, dirs = ctx.k.files(ctx.pod, ctx.container)
    status = 0
    for path in args:
        if path in files:
            io.out(files[path])
        elif path.rstrip("/") in dirs or path == "/":
            io.eprint("cat: read error: Is a directory")
            status = 1
        else:
            io.eprint(f"cat: can't open '{path}': No such file or directory")
            status = 1
    return status


def _nslookup(ctx: _Ctx, args: list[str], io: IO) -> int:
    names = [a for a in args if not a.startswith("-")]
    if not names:
        io.eprint("BusyBox v1.36.1 (2023-05-18 22:34:17 UTC) multi-call binary.\n\n"
                  "Usage: nslookup [-type=QUERY_TYPE] [-debug] HOST [DNS_SERVER]")
        return 1
    server = ctx.k.search_domains(ctx.pod)[0][:1] or [DEFAULT_DNS_IP]
    io.print(f"Server:\t\t{server[0]}\nAddress:\t{server[0]}:53\n")
    if ctx.k.search(ctx.pod, names[0])[-1][1].rcode == "TIMEOUT":
        io.print(";; connection timed out; no servers could be reached\n")
        return 1
    hit = ctx.k.resolve(ctx.pod, names[0])
    if hit is None:
        io.print(f"** server can't find {names[0]}: NXDOMAIN\n")
        return 1
    fqdn, kind, values = hit
    if kind == "CNAME":
        io.print(f"{fqdn}\tcanonical name = {values[0]}\n")
        return 0
    if not values:
        io.print(f"*** Can't find {names[0]}: No answer\n")
        return 1
    for ip in values:
        io.print(f"Name:\t{fqdn}\nAddress: {ip}\n")
    return 0


DIG_SECTIONS = ("cmd", "comments", "question", "answer", "stats")
DIG_TYPES = ("A", "AAAA", "CNAME", "SRV", "PTR", "TXT", "NS", "SOA", "MX", "ANY")
DIG_VERSION = "9.18.33-1~deb12u2-Debian"


def _dig(ctx: _Ctx, args: list[str], io: IO) -> int:
    """BIND's dig: several queries per command line, +[no]all/cmd/comments/question/answer/stats,
    +short, +search and +showsearch (the pod's search list and ndots), -x, @server."""
    show = dict.fromkeys(DIG_SECTIONS, True)
    short = search = showsearch = False
    queries: list[list[str | None]] = []
    server = None
    it = iter(args)
    for a in it:
        if a.startswith("@"):
            server = a[1:]
        elif a.startswith("+"):
            opt = a[1:].lower().split("=", 1)[0]
            on = not opt.startswith("no")
            key = opt if on else opt[2:]
            if key == "all":
                show = dict.fromkeys(DIG_SECTIONS, on)
            elif key in show:
                show[key] = on
            elif key == "short":
                short = on
            elif key == "search":
                search = on
            elif key == "showsearch":
                search = showsearch = on
        elif a == "-x":
            ip = next(it, "")
            try:
                queries.append([ipaddress.ip_address(ip).reverse_pointer, "PTR"])
            except ValueError:
                io.eprint(f"Invalid IP address {ip}")
                return 1
        elif a in ("-t", "-q"):
            value = next(it, "")
            if a == "-q":
                queries.append([value, None])
            elif queries and queries[-1][1] is None:
                queries[-1][1] = value.upper()
        elif a in ("-p", "-b", "-k", "-y", "-c", "-f"):
            next(it, None)
        elif a.startswith("-"):
            continue
        elif a.upper() in DIG_TYPES:
            if queries and queries[-1][1] is None:
                queries[-1][1] = a.upper()
            else:
                queries.append([None, a.upper()])
        elif a.upper() in ("IN", "CH", "HS"):
            continue
        elif queries and queries[-1][0] is None:
            queries[-1][0] = a
        else:
            queries.append([a, None])
    queries = [[n if n is not None else ".", t or ("NS" if n is None else "A")] for n, t in queries] or [[".", "NS"]]
    nameservers = ctx.k.search_domains(ctx.pod)[0] or [DEFAULT_DNS_IP]
    target = server or nameservers[0]
    if show["cmd"] and not short:
        io.print(f"\n; <<>> DiG {DIG_VERSION} <<>> {' '.join(args)}\n;; global options: +cmd")
    status = 0
    for n, (name, rdtype) in enumerate(queries):
        assert name is not None and rdtype is not None
        if target != nameservers[0]:
            tried = [(name.rstrip("."), ctx.k.ask(name, rdtype, target))]
        else:
            tried = ctx.k.search(ctx.pod, name, rdtype, use_search=search and name != ".")
        for qname, ans in tried if showsearch else tried[-1:]:
            if ans.rcode == "TIMEOUT":
                io.print(f";; communications error to {target}#53: timed out\n"
                         f";; communications error to {target}#53: timed out\n"
                         f";; communications error to {target}#53: timed out\n"
                         ";; no servers could be reached")
                status = 9
                continue
            if short:
                for _, _, _, text in ans.records:
                    io.print(text)
                continue
            if show["comments"]:
                io.print(f";; Got answer:\n;; ->>HEADER<<- opcode: QUERY, status: {ans.rcode}, id: {4096 + n}\n"
                         f";; flags: qr aa rd; QUERY: 1, ANSWER: {len(ans.records)}, AUTHORITY: 0, ADDITIONAL: 1\n"
                         ";; WARNING: recursion requested but not available\n")
            if show["question"]:
                io.print(f";; QUESTION SECTION:\n;{qname.rstrip('.')}.\t\t\tIN\t{rdtype}\n")
            if show["answer"] and ans.records:
                if show["comments"]:
                    io.print(";; ANSWER SECTION:")
                for owner, ttl, rtype, text in ans.records:
                    io.print(f"{owner}\t\t{ttl}\tIN\t{rtype}\t{text}")
                io.print()
            if show["stats"]:
                io.print(f";; Query time: 0 msec\n;; SERVER: {target}#53({target}) (UDP)\n"
                         f";; WHEN: {datetime.now(UTC):%a %b %d %H:%M:%S UTC %Y}\n;; MSG SIZE  rcvd: 100\n")
    return status


def _getent(ctx: _Ctx, args: list[str], io: IO) -> int:
    if len(args) < 2 or args[0] not in ("hosts", "ahosts"):
        io.eprint("Unknown database: " + (args[0] if args else ""))
        return 1
    hit = ctx.k.resolve(ctx.pod, args[1])
    if hit is None or not hit[2] or hit[1] != "A":
        return 2
    io.print(f"{hit[2][0]:<15} {hit[0]}")
    return 0


def _fetch(ctx: _Ctx, url: str, method: str = "GET") -> tuple[int, dict, str] | tuple[str, int]:
    """(status, JSON body, service) or (error kind, 0) for an HTTP request from this pod."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        ipaddress.IPv4Address(host)
        ip = host
    except ValueError:
        hit = ctx.k.resolve(ctx.pod, host)
        if hit is None or hit[1] != "A" or not hit[2]:
            return "resolve", 0
        ip = hit[2][0]
    target = ctx.k.connect(ip, port)
    if isinstance(target, str):
        return target, 0
    pod, pport, service = target
    if parts.scheme == "https":
        return "tls", 0
    code, body = ctx.k.respond(pod, pport, method, parts.path or "/", host if port == 80 else f"{host}:{port}",
                               service)
    return code, body, ip


def _wget(ctx: _Ctx, args: list[str], io: IO) -> int:
    quiet, out, url, spider = False, None, None, False
    it = iter(args)
    for a in it:
        if a in ("-q", "--quiet"):
            quiet = True
        elif a == "-qO-" or a == "-O-":
            quiet, out = quiet or a == "-qO-", "-"
        elif a in ("-O", "--output-document"):
            out = next(it, "-")
        elif a.startswith("-O"):
            out = a[2:]
        elif a == "--spider":
            spider = True
        elif a in ("-T", "--timeout", "-U", "--header"):
            next(it, None)
        elif not a.startswith("-"):
            url = a
    if url is None:
        io.eprint("wget: missing URL")
        return 1
    parts = urlsplit(url if "://" in url else "http://" + url)
    if not quiet:
        io.eprint(f"Connecting to {parts.netloc} ...")
    result = _fetch(ctx, url)
    if result[1] == 0 and isinstance(result[0], str):
        kind = result[0]
        if kind == "resolve":
            io.eprint(f"wget: bad address '{parts.hostname}'")
        elif kind == "tls":
            io.eprint("wget: error getting response: Connection reset by peer")
        else:
            io.eprint(f"wget: can't connect to remote host: {kind}")
        return 1
    code, body = result[0], result[1]
    data = (json.dumps(body) + "\n").encode()
    if spider:
        if not quiet:
            io.eprint("remote file exists")
        return 0
    if out in (None, "index.html") or (out and out not in ("-", "/dev/stdout")):
        if not quiet:
            io.eprint(f"saving to '{out or 'index.html'}'")
        return 0
    io.out(data)
    return 0 if code < 400 else 1


def _curl(ctx: _Ctx, args: list[str], io: IO) -> int:
    silent = show_error = fail = include = head = False
    out, fmt, url, method = None, "", None, "GET"
    it = iter(args)
    for a in it:
        if a in ("-o", "--output"):
            out = next(it, None)
        elif a in ("-w", "--write-out"):
            fmt = next(it, "")
        elif a in ("-X", "--request"):
            method = next(it, "GET")
        elif a in ("-H", "--header", "-m", "--max-time", "--connect-timeout", "-d", "--data", "-A"):
            next(it, None)
        elif a == "--silent":
            silent = True
        elif a == "--fail":
            fail = True
        elif a == "--include":
            include = True
        elif a == "--head":
            head = True
        elif a.startswith("-") and not a.startswith("--"):
            flags = a[1:]
            silent |= "s" in flags
            show_error |= "S" in flags
            fail |= "f" in flags
            include |= "i" in flags
            head |= "I" in flags
        elif not a.startswith("-"):
            url = a
    if url is None:
        io.eprint("curl: no URL specified!")
        return 2
    parts = urlsplit(url if "://" in url else "http://" + url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result = _fetch(ctx, url, "HEAD" if head else method)
    if result[1] == 0 and isinstance(result[0], str):
        kind = result[0]
        if kind == "resolve":
            code, msg = 6, f"Could not resolve host: {parts.hostname}"
        elif kind == "tls":
            code, msg = 35, "OpenSSL SSL_connect: SSL_ERROR_SYSCALL"
        elif kind == "Connection timed out":
            code, msg = 28, f"Failed to connect to {parts.hostname} port {port} after 10000 ms: Timeout was reached"
        else:
            code, msg = 7, f"Failed to connect to {parts.hostname} port {port} after 0 ms: Couldn't connect to server"
        if not silent or show_error:
            io.eprint(f"curl: ({code}) {msg}")
        if fmt:
            io.out(fmt.replace("%{http_code}", "000").encode().decode("unicode_escape").encode())
        return code
    status, body, ip = result
    data = (json.dumps(body) + "\n").encode()
    if fail and status >= 400:
        if not silent or show_error:
            io.eprint(f"curl: (22) The requested URL returned error: {status}")
        return 22
    if include or head:
        io.out(f"HTTP/1.1 {status} OK\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
               .encode())
    if not head and out in (None, "-"):
        io.out(data)
    if fmt:
        text = fmt.replace("%{http_code}", str(status)).replace("%{remote_ip}", ip) \
            .replace("%{size_download}", str(len(data)))
        io.out(text.encode().decode("unicode_escape").encode())
    return 0


def _sh(ctx: _Ctx, args: list[str], io: IO) -> int:
    if args and args[0] == "-c":
        if len(args) < 2:
            io.eprint("sh: -c requires an argument")
            return 2
        return ctx.shell(args[1], io)
    if args:
        io.eprint(f"sh: can't open '{args[0]}': No such file or directory")
        return 2
    while not io.cancel.is_set():  # a script on stdin, line by line (interactive: as typed)
        line = io.stdin.readline()
        if not line:
            break
        for cmds in _split_list(line.decode("utf-8", "replace").rstrip("\r\n")):
            ctx.status = ctx._run_list(cmds, io)
    return ctx.status


def _sleep(ctx: _Ctx, args: list[str], io: IO) -> int:
    try:
        seconds = sum(float(a.rstrip("s")) * {"m": 60, "h": 3600, "d": 86400}.get(a[-1], 1)
                      if a[-1] in "mhd" else float(a.rstrip("s")) for a in args) if args else None
    except ValueError:
        io.eprint(f"sleep: invalid number '{args[0]}'")
        return 1
    if seconds is None:
        io.eprint("sleep: missing operand")
        return 1
    io.cancel.wait(seconds if seconds != float("inf") else None)
    return 0


def _echo(ctx: _Ctx, args: list[str], io: IO) -> int:
    newline = True
    if args and args[0] == "-n":
        newline, args = False, args[1:]
    io.out((" ".join(args) + ("\n" if newline else "")).encode())
    return 0


def _hostname(ctx: _Ctx, args: list[str], io: IO) -> int:
    io.print(ctx.env.get("HOSTNAME", ctx.pod["metadata"]["name"]))
    return 0


TOOLS: dict[str, Callable[[_Ctx, list[str], IO], int]] = {
    "env": _env, "printenv": _printenv, "cat": _cat, "nslookup": _nslookup, "dig": _dig,
    "getent": _getent, "wget": _wget, "curl": _curl, "sh": _sh, "sleep": _sleep, "echo": _echo,
    "hostname": _hostname, "true": lambda ctx, a, io: 0, "false": lambda ctx, a, io: 1,
}


def exit_status(code: int, argv: list[str]) -> dict[str, Any]:
    """The Status the kubelet writes on the error channel when a command ends."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command "
                       f"[{' '.join(argv)}], exit code {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
