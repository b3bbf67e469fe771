"""Plain-text HTTP/2 (h2c, prior knowledge) as an app would speak it to the sidecar, with the `h2` protocol
library: several streams on one connection at once, which curl 7.88 cannot do reliably (it fails to reuse a
prior-knowledge connection: "Error in the HTTP2 framing layer")."""

from __future__ import annotations

import socket

import h2.config
import h2.connection
import h2.events


def h2c_requests(port: int, requests: list, authority: str = "localhost", timeout: float = 10) -> list:
    """Sends every (method, path) at once, each on its own stream, without waiting for the server's
    SETTINGS; returns, in order, each stream's `:status` (int) or `reset <error code>` (str)."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    connection.initiate_connection()
    streams = {}
    for method, path in requests:
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, [(":method", method), (":path", path), (":scheme", "http"),
                                         (":authority", authority)], end_stream=True)
        streams[stream] = None
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(connection.data_to_send())
        ended = set()
        while len(ended) < len(streams):
            data = sock.recv(65536)
            if not data:
                break
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    streams[event.stream_id] = int(dict(event.headers)[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    streams[event.stream_id] = f"reset {event.error_code.name}"
                if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    ended.add(event.stream_id)
            sock.sendall(connection.data_to_send())
    return list(streams.values())
