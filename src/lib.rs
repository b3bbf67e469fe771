//! podward: an Envoy filter that lends a pod's service-account identity to
//! its app, as `kubectl proxy` does, with a policy in front.
//!
//! This crate is the core: plain Rust with no host calls, tested natively and
//! as wasm. [`engine`] owns every decision, from a request's headers to the
//! end of its stream and the sidecar's reading of the pod's files; it reaches
//! its host only through the small traits in [`host`]. The hosts are thin
//! adapters in their own crates: `hosts/wasm` (podward.wasm, proxy-wasm) and
//! `hosts/native` (libpodward.so, an Envoy dynamic module).
//!
//! The core needs only `alloc`: the wasm build links no `std`, whose panic,
//! I/O and thread-local runtime would make the module larger, and V8's memory
//! for a VM grows with the module it compiles.

#![no_std]
#![forbid(unsafe_code)]
// A panic kills the VM and every request after it fails: none outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

extern crate alloc;
#[cfg(test)]
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
pub mod engine;
pub mod fields;
pub mod filter;
pub mod headers;
pub mod host;
pub mod identity;
pub mod metrics;
pub mod policy;
#[cfg(test)]
mod policy_tables;
pub mod refresh;
pub mod request_info;
pub mod status;
pub mod token;

/// The constants Rust and Python share live in constants.json; Python and
/// build.sh read it, and these tests hold Rust's copies to it.
#[cfg(test)]
mod shared_constants {
    use crate::prelude::*;
    use serde_json::{json, Value};

    fn shared() -> Value {
        serde_json::from_str(include_str!("../constants.json")).unwrap()
    }

    /// A table of name-value pairs as constants.json writes it: one JSON object.
    fn as_object(pairs: &[(&str, &str)]) -> Value {
        Value::Object(
            pairs
                .iter()
                .map(|(name, value)| (name.to_string(), json!(value)))
                .collect(),
        )
    }

    #[test]
    fn the_startup_wait_is_the_shared_one() {
        let config = crate::config::Config::parse(b"").unwrap();
        assert_eq!(shared()["startup_wait_ms"], json!(config.startup_wait_ms));
        assert_eq!(
            config.startup_wait_ms,
            crate::config::DEFAULT_STARTUP_WAIT_MS
        );
    }

    #[test]
    fn the_file_directories_are_the_shared_ones() {
        assert_eq!(
            shared()["directories"],
            as_object(crate::config::DEFAULT_DIRECTORIES)
        );
    }

    #[test]
    fn the_env_headers_are_the_shared_ones() {
        assert_eq!(
            shared()["env_headers"],
            as_object(crate::config::DEFAULT_ENV_HEADERS)
        );
    }

    #[test]
    fn the_file_cluster_is_the_shared_one() {
        let config = crate::config::Config::parse(b"").unwrap();
        assert_eq!(shared()["files_cluster"], json!(config.file_source.cluster));
    }

    #[test]
    fn the_sidecar_configmaps_are_the_shared_ones() {
        let shared = shared();
        let names: Vec<(&str, &str)> = shared["sidecar_configmap_env"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(variable, name)| (variable.as_str(), name.as_str().unwrap()))
            .collect();
        assert_eq!(names, crate::policy::SIDECAR_CONFIGMAP_ENV);
    }

    #[test]
    fn the_metric_tag_keys_are_the_shared_ones() {
        assert_eq!(shared()["metric_tag_keys"], json!(crate::metrics::TAG_KEYS));
    }

    #[test]
    fn the_readiness_path_is_the_shared_one() {
        assert_eq!(
            shared()["readiness_path"],
            json!(crate::filter::READINESS_PATH)
        );
    }
}
