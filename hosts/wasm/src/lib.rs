//! podward.wasm: the proxy-wasm adapter. [`abi`] is the host's ABI (its
//! imports, the callbacks it calls, the allocator); [`host`] names the calls
//! the glue makes; [`vm`] is the glue that hands each callback to podward's
//! engine and carries out its answer. It decides nothing itself.
//!
//! Each VM (one per Envoy worker, one on the main thread) runs one engine per
//! plugin; the files come from Envoy's internal file listener, fetched by
//! HTTP calls the engine asks for.

// The module links no std (see the core's lib.rs); the glue's tests, built
// for the host, do.
#![cfg_attr(target_family = "wasm", no_std)]
// `unsafe` lives in the ABI module alone.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]
// A panic kills the VM and every request after it fails: none outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

extern crate alloc;

#[allow(unsafe_code)]
pub mod abi;
pub mod host;
pub mod vm;

pub use host::ProxyWasm;
pub use vm::{Action, Vm};
