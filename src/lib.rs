//! podward: an Envoy proxy-wasm filter that lends a pod's service-account
//! identity to its app, as `kubectl proxy` does, with a policy in front.
//!
//! Every module but `plugin` is plain Rust with no host calls, tested natively
//! and as wasm; `plugin` is the thin proxy-wasm adapter.

// A panic kills the VM and every request after it fails: none outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod config;
pub mod downward;
pub mod fields;
pub mod filter;
pub mod headers;
pub mod identity;
pub mod policy;
pub mod refresh;
pub mod request_info;
pub mod status;
pub mod token;

#[cfg(not(test))]
mod plugin;
