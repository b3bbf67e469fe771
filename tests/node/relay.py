"""The one-node cluster's API server, reachable from this machine as https://127.0.0.1:PORT, as a kind cluster's.

../shared/node runs the node in a private network namespace: its API server listens on 10.88.0.1:6443, which
only that namespace reaches. `start` binds 127.0.0.1:PORT here, then runs `serve` inside the node's network
namespace (nsenter) with that listening socket inherited: each connection accepted on the host's loopback is
copied to and from the API server there. The API server's certificate names 127.0.0.1, so TLS is verified
end to end; kubectl exec, logs and port-forward go through the API server to the kubelet, so they work too.

    relay.py start NODE_WORK      # prints the port; the relay's pid goes to NODE_WORK/e2e/relay.pid
    relay.py stop NODE_WORK
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading

API_SERVER = ("10.88.0.1", 6443)


def state_dir(node_work: str) -> pathlib.Path:
    return pathlib.Path(node_work) / "e2e"


def start(node_work: str) -> None:
    holder = (pathlib.Path(node_work) / "var" / "holder.pid").read_text().strip()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    relay = subprocess.Popen(
        ["nsenter", "-t", holder, "--net", "--", sys.executable, __file__, "serve", str(listener.fileno())],
        pass_fds=[listener.fileno()], start_new_session=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=open(state_dir(node_work) / "relay.log", "ab"))
    (state_dir(node_work) / "relay.pid").write_text(f"{relay.pid}\n")
    print(listener.getsockname()[1])


def stop(node_work: str) -> None:
    pid_file = state_dir(node_work) / "relay.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except ProcessLookupError:
            pass
        pid_file.unlink()


def copy(source: socket.socket, sink: socket.socket) -> None:
    """One direction of a connection; the end of the source's data is passed on as a half-close."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        source.close()
        sink.close()


def serve(listener_fd: int) -> None:
    listener = socket.socket(fileno=listener_fd)
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(API_SERVER, timeout=10)
        except OSError as error:
            print(f"relay: {API_SERVER}: {error}", file=sys.stderr, flush=True)
            client.close()
            continue
        upstream.settimeout(None)
        # Each direction has its own file descriptor of each socket: a socket closes once both are done.
        threading.Thread(target=copy, args=(client, upstream.dup()), daemon=True).start()
        threading.Thread(target=copy, args=(upstream, client.dup()), daemon=True).start()


if __name__ == "__main__":
    command, argument = sys.argv[1], sys.argv[2]
    {"start": start, "stop": stop, "serve": lambda fd: serve(int(fd))}[command](argument)
