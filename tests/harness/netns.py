"""Another network namespace, joined to this one by a veth pair: a stand-in for the cluster network, from where
an attacker reaches the sidecar's metrics port by the address the pod's other interface would have. Needs root
(`ip netns`), as CI has."""

from __future__ import annotations

import itertools
import os
import subprocess

_numbers = itertools.count(1)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class NetworkNamespace:
    """`run_prefix` runs a command inside it; `host_address` is this namespace's end of the link, where a
    listener on 0.0.0.0 is reached from there. Removed (with its veth pair) on exit."""

    def __init__(self):
        number = next(_numbers)
        tag = f"{os.getpid() % 100000}{number}"
        self.name = f"podward-net-{tag}"
        self.host_link, self.peer_link = f"pwh{tag}"[:15], f"pwp{tag}"[:15]
        # A /30 of our own per namespace, on links that exist only on this machine.
        subnet = (os.getpid() * 4 + number) % 250 + 1
        self.host_address, self.address = f"10.254.{subnet}.1", f"10.254.{subnet}.2"

    @property
    def run_prefix(self) -> list:
        return ["ip", "netns", "exec", self.name]

    def __enter__(self) -> "NetworkNamespace":
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.host_link, "type", "veth", "peer", "name", self.peer_link)
            _ip("link", "set", self.peer_link, "netns", self.name)
            _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_link)
            _ip("link", "set", self.host_link, "up")
            _ip("-n", self.name, "addr", "add", f"{self.address}/30", "dev", self.peer_link)
            _ip("-n", self.name, "link", "set", self.peer_link, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        # Deleting the namespace deletes its end of the pair, and with it ours.
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True, timeout=10)
