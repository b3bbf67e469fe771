"""A crowd of requests held open at once: h2c streams spread over as many connections as the sidecar's
stream cap needs, sent together and answered whenever the sidecar answers them (the `h2` protocol library).

    crowd = Crowd(port, [("GET", path)] * 2000)   # sent at once; (method, path, authority) for another Host
    ...                                            # release them
    answers = crowd.answers(timeout=30)            # one Answer per request, in order
"""

from __future__ import annotations

import dataclasses
import json
import selectors
import socket
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


@dataclasses.dataclass
class Answer:
    status: int | str  # the :status, or "reset <code>" / "unanswered"
    headers: dict
    body: bytes

    def status_object(self) -> dict | None:
        """The Kubernetes Status the sidecar answered with, or None if the body is not one."""
        if self.headers.get("content-type") != "application/json":
            return None
        try:
            status = json.loads(self.body)
        except ValueError:
            return None
        return status if isinstance(status, dict) and status.get("kind") == "Status" else None


class _Connection:
    def __init__(self, port: int, requests: list, authority: str):
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        # Room for the answers' bodies without waiting for window updates.
        self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        self.streams = {}
        for index, (method, path, *host) in requests:
            stream = self.h2.get_next_available_stream_id()
            self.h2.send_headers(stream, [(":method", method), (":path", path), (":scheme", "http"),
                                          (":authority", host[0] if host else authority)], end_stream=True)
            self.streams[stream] = [index, None, {}, b""]
        self.ended = set()
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.socket.sendall(self.h2.data_to_send())
        self.socket.setblocking(False)

    def receive(self) -> bool:
        """Reads what arrived; False once the connection is closed."""
        try:
            data = self.socket.recv(1 << 16)
        except BlockingIOError:
            return True
        except ConnectionError:
            data = b""
        if not data:
            return False
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            return False
        for event in events:
            entry = self.streams.get(getattr(event, "stream_id", None))
            if isinstance(event, h2.events.ResponseReceived):
                entry[2] = dict(event.headers)
                entry[1] = int(entry[2][":status"])
            elif isinstance(event, h2.events.DataReceived):
                entry[3] += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamReset) and entry is not None:
                entry[1] = f"reset {event.error_code.name}"
            if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)) and entry is not None:
                self.ended.add(event.stream_id)
        self.socket.setblocking(True)
        try:
            self.socket.sendall(self.h2.data_to_send())
        except OSError:
            return False
        finally:
            self.socket.setblocking(False)
        return True

    def done(self) -> bool:
        return len(self.ended) == len(self.streams)


class Crowd:
    """Every request sent at once, `per_connection` streams to a connection."""

    def __init__(self, port: int, requests: list, per_connection: int = 100, authority: str = "localhost"):
        self.size = len(requests)
        numbered = list(enumerate(requests))
        self.connections = []
        try:
            for first in range(0, len(numbered), per_connection):
                self.connections.append(_Connection(port, numbered[first:first + per_connection], authority))
        except BaseException:
            self.close()
            raise

    def answers(self, timeout: float) -> list:
        """Waits until every stream has ended, each connection closed, or the timeout; one Answer per request."""
        selector = selectors.DefaultSelector()
        for connection in self.connections:
            selector.register(connection.socket, selectors.EVENT_READ, connection)
        open_ones = {c for c in self.connections if not c.done()}
        deadline = time.monotonic() + timeout
        while open_ones and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                connection = key.data
                if connection in open_ones and (not connection.receive() or connection.done()):
                    open_ones.discard(connection)
        selector.close()
        self.close()
        answers = [Answer("unanswered", {}, b"")] * self.size
        for connection in self.connections:
            for stream, (index, status, headers, body) in connection.streams.items():
                if stream in connection.ended:
                    answers[index] = Answer(status, headers, body)
        return answers

    def close(self) -> None:
        for connection in self.connections:
            connection.socket.close()
