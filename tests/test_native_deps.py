"""libpodward.so loads in any image that carries Envoy: it needs no shared library that Envoy's own binary does
not link (slim and distroless Envoy images carry nothing else; issue 17 found `libgcc_s.so.1` missing in one).
The panic containment that needs Rust's unwinder is tested by test_crash_drill.py; build.sh links the unwinder
statically."""

from __future__ import annotations

import subprocess

from podward.local.envoy_process import ENVOY_BINARY, NATIVE



def needed(elf) -> set:
    """The ELF's DT_NEEDED entries: the shared libraries the dynamic loader must find for it."""
    dynamic = subprocess.run(["readelf", "--dynamic", "--wide", str(elf)], capture_output=True, text=True,
                             check=True).stdout
    return {line.split("[", 1)[1].split("]", 1)[0] for line in dynamic.splitlines() if "(NEEDED)" in line}


def test_the_native_module_needs_only_libraries_envoy_links():
    envoy = needed(ENVOY_BINARY)
    assert "libc.so.6" in envoy  # readelf read Envoy's dynamic section
    module = needed(NATIVE)
    assert module, "readelf found no DT_NEEDED in libpodward.so"
    assert module <= envoy, f"libpodward.so needs {sorted(module - envoy)}, which Envoy does not link"
