"""exec, attach and port-forward for the stand-in API server: the upgraded connections the kubelet serves
behind the API server, with a fake container at the far end.

Two transports, as real clients use them:
  * WebSocket (RFC 6455) with the channel protocols `v5.channel.k8s.io` / `v4.channel.k8s.io` for exec
    and attach (one byte of channel, then data: 0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize; v5 adds
    255 = "close this channel"), and port-forward as a data and an error channel per port, each opened
    by a frame carrying the port number (little endian);
  * SPDY/3.1 (kubectl before 1.30, k8s.io/apimachinery/pkg/util/httpstream/spdy): one SPDY stream per
    stdin/stdout/stderr/error/resize, or a data and an error stream per forwarded connection, header
    blocks compressed with zlib and the SPDY/3 dictionary.

The container: exec runs `cat` (echoes stdin to stdout until stdin closes), `echo ARGS`, `false`; any other
command is "not found" (exit 127). Attach joins the container's main process, which is `cat`. Forwarded
ports echo what they receive. The exit code comes back as the Status the kubelet sends: Success, or
Failure/NonZeroExitCode with the code as an ExitCode cause.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import zlib
from dataclasses import dataclass, field

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
V5_CHANNEL = "v5.channel.k8s.io"
V4_CHANNEL = "v4.channel.k8s.io"
SPDY_UPGRADE = "SPDY/3.1"
PORT_FORWARD_SPDY = "portforward.k8s.io"
# kubectl >= 1.31 port-forwards over a WebSocket carrying SPDY/3.1 in its binary messages (KEP-4006).
PORT_FORWARD_TUNNEL = "SPDY/3.1+portforward.k8s.io"
STREAM_PROTOCOL_HEADER = "X-Stream-Protocol-Version"

STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


# --- The fake container --------------------------------------------------------------------------------

class ContainerProcess:
    """A process in the stand-in's container. Output is returned as [(stream, bytes)], stream being
    "stdout" or "stderr"; `exit_code` is None while it runs."""

    def __init__(self, command: list):
        self.command = command or ["cat"]
        self.exit_code: int | None = None

    def start(self) -> list:
        name, args = self.command[0], self.command[1:]
        if name == "cat":
            return []
        if name == "echo":
            self.exit_code = 0
            return [("stdout", (" ".join(args) + "\n").encode())]
        if name == "false":
            self.exit_code = 1
            return []
        self.exit_code = 127
        return [("stderr", f"sh: {name}: not found\n".encode())]

    def write_stdin(self, data: bytes) -> list:
        return [("stdout", data)] if self.exit_code is None else []

    def close_stdin(self) -> list:
        if self.exit_code is None:
            self.exit_code = 0  # cat ends at end of input
        return []

    def status(self) -> dict:
        """What the kubelet writes on the error channel once the process has ended."""
        if self.exit_code == 0:
            return {"metadata": {}, "status": "Success"}
        return {"metadata": {}, "status": "Failure",
                "message": f"command terminated with non-zero exit code: error executing command "
                           f"{self.command}, exit code {self.exit_code}",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(self.exit_code)}]}}


@dataclass
class StreamSession:
    """One upgraded connection as the stand-in saw it, for tests to inspect."""
    kind: str                      # exec | attach | portforward
    transport: str                 # websocket | spdy
    protocol: str                  # the negotiated subprotocol
    command: list = field(default_factory=list)
    stdin: bytearray = field(default_factory=bytearray)
    resizes: list = field(default_factory=list)
    forwarded: dict = field(default_factory=dict)   # port -> bytes received
    exit_code: int | None = None
    ended: threading.Event = field(default_factory=threading.Event)


@dataclass
class ExecOptions:
    """The PodExecOptions / PodAttachOptions query parameters."""
    command: list
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def from_query(cls, query: dict, kind: str) -> "ExecOptions":
        def flag(name, default=False):
            values = query.get(name)
            return values[-1] in ("true", "1") if values else default
        command = query.get("command", []) if kind == "exec" else ["cat"]
        return cls(command, flag("stdin"), flag("stdout", True), flag("stderr", True), flag("tty"))


def offered_protocols(header_values: list) -> list:
    """Protocols a client offers, whether sent as repeated headers or comma-joined by a proxy."""
    return [p.strip() for value in header_values for p in value.split(",") if p.strip()]


def negotiate(offered: list, supported: list) -> str | None:
    """The client's first choice that the server supports (httpstream.Handshake, wsstream)."""
    return next((p for p in offered if p in supported), None)


# --- WebSocket -------------------------------------------------------------------------------------------

def websocket_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()


class WebSocket:
    """Server side of RFC 6455 over a handler's rfile/wfile: binary messages, pings answered, close echoed."""
    TEXT, BINARY, CLOSE_FRAME, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA

    def __init__(self, rfile, wfile):
        self.rfile, self.wfile = rfile, wfile
        self.closed = False

    def send(self, payload: bytes, opcode: int = BINARY):
        size = len(payload)
        if size < 126:
            header = bytes([0x80 | opcode, size])
        elif size < 1 << 16:
            header = bytes([0x80 | opcode, 126]) + size.to_bytes(2, "big")
        else:
            header = bytes([0x80 | opcode, 127]) + size.to_bytes(8, "big")
        self.wfile.write(header + payload)

    def receive(self) -> bytes | None:
        """The next text or binary message; None once the client has closed or gone."""
        message = b""
        while True:
            head = self._read(2)
            if head is None:
                return None
            final, opcode = head[0] & 0x80, head[0] & 0x0F
            size = head[1] & 0x7F
            if size >= 126:
                extended = self._read(2 if size == 126 else 8)
                if extended is None:
                    return None
                size = int.from_bytes(extended, "big")
            mask = self._read(4) if head[1] & 0x80 else b""
            payload = self._read(size)
            if mask is None or payload is None:
                return None
            if mask:
                payload = _unmask(payload, mask)
            if opcode == self.CLOSE_FRAME:
                self.close(payload[:2] or (1000).to_bytes(2, "big"))
                return None
            if opcode == self.PING:
                self.send(payload, self.PONG)
            elif opcode != self.PONG:
                message += payload
                if final:
                    return message

    def close(self, code: bytes = (1000).to_bytes(2, "big")):
        if not self.closed:
            self.closed = True
            self.send(code, self.CLOSE_FRAME)

    def await_close_reply(self):
        """After our Close: wait for the client's, then the caller closes TCP (the server does, RFC 6455 7.1.1)."""
        while self.receive() is not None:
            pass

    def _read(self, size: int) -> bytes | None:
        if size == 0:
            return b""
        data = self.rfile.read(size)
        return data if len(data) == size else None


class TunnelledStream:
    """A WebSocket's binary messages as one byte stream each way, the rfile/wfile of a tunnelled SPDY connection."""

    def __init__(self, ws: WebSocket):
        self.ws, self.buffer = ws, b""

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size and (message := self.ws.receive()) is not None:
            self.buffer += message
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def write(self, data: bytes):
        self.ws.send(data)


def _unmask(payload: bytes, mask: bytes) -> bytes:
    size = len(payload)
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


def serve_websocket_exec(ws: WebSocket, session: StreamSession, options: ExecOptions):
    """exec/attach over the channel protocol: stdin in, stdout/stderr out, the Status on channel 3."""
    process = ContainerProcess(options.command)

    def emit(outputs):
        for stream, data in outputs:
            channel = STDOUT if stream == "stdout" or options.tty else STDERR
            if (options.stdout if channel == STDOUT else options.stderr):
                ws.send(bytes([channel]) + data)

    emit(process.start())
    while process.exit_code is None:
        message = ws.receive()
        if message is None:
            return  # the client left; the process would be killed
        channel, data = message[0], message[1:]
        if channel == STDIN:
            session.stdin += data
            emit(process.write_stdin(data))
        elif channel == RESIZE:
            session.resizes.append(json.loads(data))
        elif channel == CLOSE and session.protocol == V5_CHANNEL and data[:1] == bytes([STDIN]):
            emit(process.close_stdin())
    session.exit_code = process.exit_code
    ws.send(bytes([STATUS]) + json.dumps(process.status(), separators=(",", ":")).encode())
    ws.close()
    ws.await_close_reply()


def serve_websocket_portforward(ws: WebSocket, session: StreamSession, ports: list):
    """Port-forward over WebSocket: channels 2i (data) and 2i+1 (error) for the i-th port, each opened
    with the port number; the pod's ports echo what they get."""
    for index, port in enumerate(ports):
        for channel in (2 * index, 2 * index + 1):
            ws.send(bytes([channel]) + port.to_bytes(2, "little"))
    while (message := ws.receive()) is not None:
        channel, data = message[0], message[1:]
        if channel % 2 == 0 and channel // 2 < len(ports):
            port = ports[channel // 2]
            session.forwarded[port] = session.forwarded.get(port, b"") + data
            ws.send(bytes([channel]) + data)


# --- SPDY/3.1 --------------------------------------------------------------------------------------------

# The SPDY/3 header-compression dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1): length-prefixed
# header names and values, then a run of common strings. Byte-exact, or the peer's inflate refuses it.
_DICTIONARY_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base content-encoding "
    "content-language content-length content-location content-md5 content-range content-type date etag "
    "expect expires from host if-match if-modified-since if-none-match if-range if-unmodified-since "
    "last-modified location max-forwards pragma proxy-authenticate proxy-authorization range referer "
    "retry-after server te trailer transfer-encoding upgrade user-agent vary via warning www-authenticate "
    "method get status 200_OK version HTTP/1.1 url public set-cookie keep-alive origin"
).split()
_DICTIONARY_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
SPDY_DICTIONARY = b"".join(len(w).to_bytes(4, "big") + w.replace("_", " ").encode()
                           for w in _DICTIONARY_WORDS) + _DICTIONARY_TAIL.encode()

SYN_STREAM, SYN_REPLY, RST_STREAM, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 6, 7, 8, 9
FLAG_FIN = 0x01


@dataclass
class SpdyFrame:
    control: bool
    kind: int          # control frame type; 0 for data
    flags: int
    stream_id: int     # for data, SYN_STREAM, SYN_REPLY, RST_STREAM, HEADERS, WINDOW_UPDATE
    payload: bytes
    headers: dict = field(default_factory=dict)

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


class SpdyConnection:
    """SPDY/3 framing over a handler's rfile/wfile, as moby/spdystream speaks it: no flow control, one
    zlib context per direction for header blocks."""

    def __init__(self, rfile, wfile):
        self.rfile, self.wfile = rfile, wfile
        self.inflater = zlib.decompressobj(zdict=SPDY_DICTIONARY)
        self.deflater = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, 15, 8,
                                         zlib.Z_DEFAULT_STRATEGY, SPDY_DICTIONARY)

    def read_frame(self) -> SpdyFrame | None:
        head = self.rfile.read(8)
        if len(head) < 8:
            return None
        flags, length = head[4], int.from_bytes(head[5:8], "big")
        payload = self.rfile.read(length)
        if len(payload) < length:
            return None
        if not head[0] & 0x80:
            return SpdyFrame(False, 0, flags, int.from_bytes(head[:4], "big") & 0x7FFFFFFF, payload)
        kind = int.from_bytes(head[2:4], "big")
        frame = SpdyFrame(True, kind, flags, 0, payload)
        if kind in (SYN_STREAM, SYN_REPLY, RST_STREAM, HEADERS, WINDOW_UPDATE):
            frame.stream_id = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        if kind == SYN_STREAM:
            frame.headers = self._decode_headers(payload[10:])
        elif kind in (SYN_REPLY, HEADERS):
            frame.headers = self._decode_headers(payload[4:])
        return frame

    def reply(self, stream_id: int):
        """SYN_REPLY with no headers: the stream is accepted (the client waits for this)."""
        self._control(SYN_REPLY, 0, stream_id.to_bytes(4, "big") + self._encode_headers({}))

    def data(self, stream_id: int, data: bytes = b"", fin: bool = False):
        self.wfile.write(stream_id.to_bytes(4, "big") + bytes([FLAG_FIN if fin else 0])
                         + len(data).to_bytes(3, "big") + data)

    def ping(self, payload: bytes):
        self._control(PING, 0, payload)

    def _control(self, kind: int, flags: int, payload: bytes):
        self.wfile.write(bytes([0x80, 3]) + kind.to_bytes(2, "big") + bytes([flags])
                         + len(payload).to_bytes(3, "big") + payload)

    def _decode_headers(self, block: bytes) -> dict:
        raw = self.inflater.decompress(block)
        count, offset, headers = int.from_bytes(raw[:4], "big"), 4, {}
        for _ in range(count):
            name_length = int.from_bytes(raw[offset:offset + 4], "big")
            name = raw[offset + 4:offset + 4 + name_length].decode()
            offset += 4 + name_length
            value_length = int.from_bytes(raw[offset:offset + 4], "big")
            headers[name] = raw[offset + 4:offset + 4 + value_length].decode().split("\x00")
            offset += 4 + value_length
        return headers

    def _encode_headers(self, headers: dict) -> bytes:
        raw = len(headers).to_bytes(4, "big")
        for name, values in headers.items():
            value = "\x00".join(values).encode()
            raw += len(name).to_bytes(4, "big") + name.encode() + len(value).to_bytes(4, "big") + value
        return self.deflater.compress(raw) + self.deflater.flush(zlib.Z_SYNC_FLUSH)


def _stream_header(frame: SpdyFrame, name: str) -> str:
    return (frame.headers.get(name) or [""])[0]


def serve_spdy_exec(spdy: SpdyConnection, session: StreamSession, options: ExecOptions):
    """exec/attach, remotecommand protocol v4: the client opens an error stream, then stdin/stdout/stderr
    (and resize with a TTY); the process starts once all expected streams exist; the Status is written on
    the error stream when it ends."""
    process = ContainerProcess(options.command)
    expected = {"error"} | {name for name, wanted in (("stdin", options.stdin), ("stdout", options.stdout),
                                                       ("stderr", options.stderr and not options.tty),
                                                       ("resize", options.tty)) if wanted}
    streams: dict[str, int] = {}
    kinds: dict[int, str] = {}
    started = False

    def emit(outputs):
        for stream, data in outputs:
            target = "stdout" if options.tty else stream
            if target in streams:
                spdy.data(streams[target], data)

    while not (started and process.exit_code is not None):
        frame = spdy.read_frame()
        if frame is None or frame.kind == GOAWAY:
            return  # the client left; the process would be killed
        if frame.kind == SYN_STREAM:
            kind = _stream_header(frame, "streamtype")
            streams[kind], kinds[frame.stream_id] = frame.stream_id, kind
            spdy.reply(frame.stream_id)
            if not started and expected <= set(streams):
                started = True
                emit(process.start())
        elif frame.kind == PING:
            spdy.ping(frame.payload)
        elif not frame.control and kinds.get(frame.stream_id) == "stdin":
            session.stdin += frame.payload
            emit(process.write_stdin(frame.payload))
            if frame.fin:
                emit(process.close_stdin())
        elif not frame.control and kinds.get(frame.stream_id) == "resize":
            session.resizes += [json.loads(line) for line in frame.payload.splitlines() if line.strip()]
    session.exit_code = process.exit_code
    spdy.data(streams["error"], json.dumps(process.status(), separators=(",", ":")).encode())
    for stream_id in streams.values():
        spdy.data(stream_id, fin=True)
    _drain(spdy)


def serve_spdy_portforward(spdy: SpdyConnection, session: StreamSession):
    """Port-forward: per forwarded connection the client opens an error and a data stream sharing a
    `requestid`; data is echoed by the pod; when the client half-closes the data stream, the pod's side
    closes both."""
    requests: dict[str, dict] = {}   # requestid -> {"error": id, "data": id, "port": int}
    data_streams: dict[int, str] = {}
    while (frame := spdy.read_frame()) is not None and frame.kind != GOAWAY:
        if frame.kind == SYN_STREAM:
            request_id = _stream_header(frame, "requestid")
            pair = requests.setdefault(request_id, {"port": int(_stream_header(frame, "port") or 0)})
            pair[_stream_header(frame, "streamtype")] = frame.stream_id
            if _stream_header(frame, "streamtype") == "data":
                data_streams[frame.stream_id] = request_id
            spdy.reply(frame.stream_id)
        elif frame.kind == PING:
            spdy.ping(frame.payload)
        elif not frame.control and frame.stream_id in data_streams:
            pair = requests[data_streams[frame.stream_id]]
            if frame.payload:
                session.forwarded[pair["port"]] = session.forwarded.get(pair["port"], b"") + frame.payload
                spdy.data(frame.stream_id, frame.payload)
            if frame.fin:
                spdy.data(frame.stream_id, fin=True)
                if "error" in pair:
                    spdy.data(pair["error"], fin=True)


def _drain(spdy: SpdyConnection):
    """Closing with unread input would reset the connection and could destroy the last frames in
    flight: read until the client hangs up."""
    while spdy.read_frame() is not None:
        pass
