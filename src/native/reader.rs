//! The thread that keeps the pod's files current for the native module: it
//! drives the shared [`crate::ambassador::Ambassador`] the way a wasm VM's
//! tick does, but reads the files itself, and wakes the streams it releases
//! or gives up through their schedulers.

use super::abi;
use super::telemetry::lock;
use super::{now_ms, SendPtr, Shared};
use crate::prelude::*;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Starts the reader; `None` if the thread could not be made.
pub(super) fn start(shared: Arc<Shared>) -> Option<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("podward-files".into())
        .spawn(move || run(&shared))
        .ok()
}

fn run(shared: &Shared) {
    let interval = Duration::from_millis(lock(&shared.ambassador).tick_interval_ms());
    loop {
        read_due_files(shared);
        if shared.telemetry.has_pending() {
            // SAFETY: committing is allowed from any thread; the scheduler
            // lives until config_destroy has joined this thread.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                    shared.config_scheduler.0,
                    0,
                );
            }
        }
        let stopping = lock(&shared.stopping);
        let (stopping, _) = shared
            .wake
            .wait_timeout_while(stopping, interval, |stopping| !*stopping)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if *stopping {
            return;
        }
    }
}

fn read_due_files(shared: &Shared) {
    let now = now_ms();
    let due = lock(&shared.ambassador).due(now);
    for (index, path) in due {
        let read = read_file(shared, &path);
        // The waiters' lock is taken inside the ambassador's, in the order a
        // stream takes them when it starts to wait: no release is missed.
        let mut ambassador = lock(&shared.ambassador);
        let released = ambassador.read_done(index, read, now / 1000, &shared.telemetry);
        *shared
            .prepared
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = ambassador.prepared().cloned();
        wake(shared, &released);
    }
    let mut ambassador = lock(&shared.ambassador);
    let given_up: Vec<u64> = ambassador
        .tick(now, &shared.telemetry)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    wake(shared, &given_up);
}

/// Runs each stream's scheduled hook on its worker: it serves the request if
/// podward is ready by then, or answers with why not.
fn wake(shared: &Shared, streams: &[u64]) {
    if streams.is_empty() {
        return;
    }
    let waiters = lock(&shared.waiters);
    for (id, SendPtr(scheduler)) in waiters.iter() {
        if streams.contains(id) {
            // SAFETY: a scheduler on the waiting list has not been deleted;
            // a stream deletes its own only after leaving the list.
            unsafe {
                abi::envoy_dynamic_module_callback_http_filter_scheduler_commit(*scheduler, 0)
            };
        }
    }
}

/// A file on the file source, read from the directory it maps to.
fn read_file(shared: &Shared, path: &str) -> Result<Vec<u8>, String> {
    let local = shared
        .config
        .file_source
        .local_path(path)
        .ok_or_else(|| "no directory is configured for it".to_string())?;
    std::fs::read(&local).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => format!("{local} does not exist"),
        _ => format!("could not read {local}: {error}"),
    })
}
