//! libpodward.so: the Envoy dynamic-module adapter. `abi` is Envoy's ABI
//! (the hooks it calls and the calls into it, feature `module`); [`host`]
//! names the calls the glue makes; [`plugin`] is the glue that hands each
//! hook to podward's engine and carries out its answer, and the thread that
//! reads the pod's files. It decides nothing itself.

// `unsafe` lives in the ABI module alone, each block saying why it holds.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]
// A panic in a hook is contained, but the request it served is lost: none
// outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

#[cfg(feature = "module")]
#[allow(unsafe_code)]
mod abi;
pub mod host;
pub mod plugin;

pub use host::EnvoyHost;
pub use plugin::{Headers, Plugin, Shared, Stream};
