//! Keeping the pod's files current (the token, the policy file, the Downward
//! API files): when to read each again, and which content to keep.
//!
//! A read that fails, or content the caller refuses (a token file that holds
//! no usable token, a policy that does not parse), never replaces the last
//! good content.

use crate::prelude::*;
/// Until every file has been read once, retry this often so that requests
/// waiting for the first token are not held for a whole refresh interval.
pub const STARTUP_RETRY_MS: u64 = 100;

#[derive(Debug)]
struct FileSlot {
    path: String,
    /// Requests are held until a required file has content.
    required: bool,
    content: Option<Vec<u8>>,
    attempted: bool,
    /// When the read in flight started, if one is.
    in_flight_since: Option<u64>,
    last_failure: Option<String>,
}

#[derive(Debug)]
pub struct Refresher {
    files: Vec<FileSlot>,
    interval_ms: u64,
    /// A read unanswered for this long is lost (its context went away).
    lost_after_ms: u64,
    next_due_ms: u64,
}

/// What a finished read changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    Unchanged,
    Changed,
    /// The last good content stays in use; the message is safe to log.
    /// `repeated`: the previous read of this file failed the same way.
    Failed {
        message: String,
        repeated: bool,
    },
}

impl Refresher {
    /// `files`: each path, and whether it is required.
    pub fn new(files: &[(&str, bool)], interval_ms: u64, lost_after_ms: u64) -> Refresher {
        Refresher {
            files: files
                .iter()
                .map(|&(path, required)| FileSlot {
                    path: path.to_string(),
                    required,
                    content: None,
                    attempted: false,
                    in_flight_since: None,
                    last_failure: None,
                })
                .collect(),
            interval_ms,
            lost_after_ms,
            next_due_ms: 0,
        }
    }

    /// The files to read now, as (index, path); they count as in flight until
    /// [`Refresher::complete`] is called for each.
    pub fn due(&mut self, now_ms: u64) -> Vec<(usize, String)> {
        if now_ms < self.next_due_ms {
            return Vec::new();
        }
        let lost_after_ms = self.lost_after_ms;
        let due: Vec<(usize, String)> = self
            .files
            .iter_mut()
            .enumerate()
            .filter(|(_, slot)| {
                slot.in_flight_since
                    .is_none_or(|since| now_ms.saturating_sub(since) >= lost_after_ms)
            })
            .map(|(index, slot)| {
                slot.in_flight_since = Some(now_ms);
                (index, slot.path.clone())
            })
            .collect();
        if !due.is_empty() {
            let pause = if self.settled() {
                self.interval_ms
            } else {
                STARTUP_RETRY_MS.min(self.interval_ms)
            };
            self.next_due_ms = now_ms.saturating_add(pause);
        }
        due
    }

    /// Records a read's result: the content, or why there is none. New
    /// content is kept only if `accept` takes it.
    pub fn complete(
        &mut self,
        index: usize,
        read: Result<Vec<u8>, String>,
        accept: impl FnOnce(&[u8]) -> Result<(), String>,
    ) -> Refreshed {
        let Some(slot) = self.files.get_mut(index) else {
            return Refreshed::Unchanged;
        };
        slot.in_flight_since = None;
        slot.attempted = true;
        let checked = read.and_then(|content| {
            if slot.content.as_ref() == Some(&content) {
                return Ok(None);
            }
            accept(&content).map(|()| Some(content))
        });
        match checked {
            Ok(new) => {
                slot.last_failure = None;
                match new {
                    None => Refreshed::Unchanged,
                    Some(content) => {
                        slot.content = Some(content);
                        Refreshed::Changed
                    }
                }
            }
            Err(reason) => {
                let message = format!("{}: {reason}", slot.path);
                let repeated = slot.last_failure.as_ref() == Some(&message);
                slot.last_failure = Some(message.clone());
                Refreshed::Failed { message, repeated }
            }
        }
    }

    /// Why file `index` could not be used on its last read, if it could not.
    pub fn failure(&self, index: usize) -> Option<&str> {
        self.files.get(index)?.last_failure.as_deref()
    }

    /// Every file has been read at least once, and every required one has
    /// content: a request forwarded now carries everything it ever will.
    pub fn settled(&self) -> bool {
        self.files
            .iter()
            .all(|slot| slot.attempted && (slot.content.is_some() || !slot.required))
    }

    pub fn path(&self, index: usize) -> Option<&str> {
        self.files.get(index).map(|slot| slot.path.as_str())
    }

    /// The last good content of the file at `path`.
    pub fn content(&self, path: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|slot| slot.path == path)
            .and_then(|slot| slot.content.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "/serviceaccount/token";
    const LABELS: &str = "/podinfo/labels";

    fn paths(due: Vec<(usize, String)>) -> Vec<String> {
        due.into_iter().map(|(_, path)| path).collect()
    }

    fn any(_: &[u8]) -> Result<(), String> {
        Ok(())
    }

    fn non_empty(content: &[u8]) -> Result<(), String> {
        if content.is_empty() {
            Err("empty".into())
        } else {
            Ok(())
        }
    }

    #[test]
    fn reads_everything_then_waits_for_the_interval() {
        let mut refresher = Refresher::new(&[(TOKEN, true), (LABELS, false)], 1000, 5000);
        assert_eq!(paths(refresher.due(0)), [TOKEN, LABELS]);
        assert_eq!(refresher.due(50), []);
        assert_eq!(
            refresher.complete(0, Ok(b"t1".to_vec()), any),
            Refreshed::Changed
        );
        assert!(!refresher.settled(), "labels not tried yet");
        assert_eq!(
            refresher.complete(1, Err("HTTP 404".into()), any),
            Refreshed::Failed {
                message: format!("{LABELS}: HTTP 404"),
                repeated: false
            }
        );
        assert!(
            refresher.settled(),
            "a missing optional file does not hold requests"
        );
        // Before settling the retry pause was short; the next round is due.
        assert_eq!(paths(refresher.due(100)), [TOKEN, LABELS]);
        assert_eq!(refresher.due(1099), []);
        assert_eq!(
            refresher.complete(0, Ok(b"t1".to_vec()), any),
            Refreshed::Unchanged
        );
        assert_eq!(
            refresher.complete(1, Ok(b"a=\"b\"".to_vec()), any),
            Refreshed::Changed
        );
        assert_eq!(paths(refresher.due(1100)), [TOKEN, LABELS]);
    }

    #[test]
    fn a_missing_required_file_is_retried_quickly() {
        let mut refresher = Refresher::new(&[(TOKEN, true)], 1000, 5000);
        refresher.due(0);
        refresher.complete(0, Err("HTTP 404".into()), any);
        assert!(!refresher.settled());
        assert_eq!(paths(refresher.due(STARTUP_RETRY_MS)), [TOKEN]);
    }

    #[test]
    fn a_file_still_in_flight_is_not_read_twice() {
        let mut refresher = Refresher::new(&[(TOKEN, true), (LABELS, false)], 10, 5000);
        refresher.due(0);
        refresher.complete(1, Ok(Vec::new()), any);
        assert_eq!(paths(refresher.due(10)), [LABELS]);
    }

    #[test]
    fn refused_content_never_replaces_the_last_good() {
        let mut refresher = Refresher::new(&[(TOKEN, true)], 1000, 5000);
        refresher.due(0);
        refresher.complete(0, Ok(b"good".to_vec()), non_empty);
        for bad in [Err("HTTP 503".to_string()), Ok(Vec::new())] {
            refresher.due(u64::MAX);
            let outcome = refresher.complete(0, bad, non_empty);
            assert!(matches!(outcome, Refreshed::Failed { .. }), "{outcome:?}");
            assert_eq!(refresher.content(TOKEN), Some(&b"good"[..]));
        }
        assert_eq!(refresher.failure(0), Some("/serviceaccount/token: empty"));
        refresher.complete(0, Ok(b"rotated".to_vec()), non_empty);
        assert_eq!(refresher.content(TOKEN), Some(&b"rotated"[..]));
        assert_eq!(refresher.failure(0), None);
    }

    #[test]
    fn unchanged_content_is_not_offered_again() {
        let mut refresher = Refresher::new(&[(TOKEN, true)], 1000, 5000);
        refresher.complete(0, Ok(b"t".to_vec()), any);
        let outcome = refresher.complete(0, Ok(b"t".to_vec()), |_| panic!("offered twice"));
        assert_eq!(outcome, Refreshed::Unchanged);
    }

    #[test]
    fn a_read_lost_with_its_context_is_retried() {
        let mut refresher = Refresher::new(&[(TOKEN, true)], 10, 5000);
        assert_eq!(paths(refresher.due(0)), [TOKEN]);
        assert_eq!(refresher.due(4999), []);
        assert_eq!(paths(refresher.due(5000)), [TOKEN]);
    }

    #[test]
    fn repeated_failures_are_marked() {
        let mut refresher = Refresher::new(&[(TOKEN, true)], 10, 5000);
        let mut fail = |now, reason: &str| {
            refresher.due(now);
            match refresher.complete(0, Err(reason.into()), any) {
                Refreshed::Failed { repeated, .. } => repeated,
                other => panic!("{other:?}"),
            }
        };
        assert!(!fail(0, "HTTP 503"));
        assert!(fail(100, "HTTP 503"));
        assert!(!fail(200, "HTTP 404"));
    }

    #[test]
    fn contents_are_found_by_path() {
        let mut refresher = Refresher::new(&[(TOKEN, true), (LABELS, false)], 1000, 5000);
        refresher.complete(1, Ok(b"a=\"1\"".to_vec()), any);
        refresher.complete(1, Err("reset".into()), any);
        assert_eq!(refresher.content(LABELS), Some(&b"a=\"1\""[..]));
        assert_eq!(refresher.content(TOKEN), None);
        assert_eq!(refresher.path(1), Some(LABELS));
        assert_eq!(refresher.path(9), None);
    }
}
