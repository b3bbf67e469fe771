//! podward: an Envoy filter that lends a pod's service-account identity to
//! its app, as `kubectl proxy` does, with a policy in front.
//!
//! Every module but `wasm` and `native` is plain Rust with no host calls,
//! tested natively and as wasm; `wasm` is the thin proxy-wasm adapter and
//! `native` the thin Envoy dynamic-module adapter (`--features native`).
//!
//! The core needs only `alloc`: the wasm build links no `std`, whose panic,
//! I/O and thread-local runtime would make the module larger, and V8's memory
//! for a VM grows with the module it compiles.

#![no_std]
// A panic kills the VM and every request after it fails: none outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

extern crate alloc;
#[cfg(any(test, not(target_family = "wasm")))]
extern crate std;

/// What `std`'s prelude would bring, from `alloc`.
mod prelude {
    pub use alloc::borrow::ToOwned;
    pub use alloc::format;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec;
    pub use alloc::vec::Vec;
}

pub mod ambassador;
pub mod config;
pub mod downward;
pub mod fields;
pub mod filter;
pub mod headers;
pub mod identity;
pub mod metrics;
pub mod policy;
pub mod refresh;
pub mod request_info;
pub mod status;
pub mod token;

// The proxy-wasm adapter. Left out of unit-test builds: its exports would
// make the wasm test binary a reactor that a WASI runner cannot start.
#[cfg(all(target_family = "wasm", not(test)))]
mod wasm;

// The Envoy dynamic-module adapter, built only into libpodward.so: its
// imports exist only inside Envoy.
#[cfg(all(feature = "native", not(target_family = "wasm"), not(test)))]
mod native;
