//! Keeping the token and the Downward API files current: when to fetch each
//! file from the internal file source, and which content to keep.
//!
//! A fetch that fails, or a token file that holds no usable token (the kubelet
//! mid-write, a broken volume), never replaces the last good content.

use crate::identity::Sources;
use crate::token::Token;

/// Until every file has been read once, retry this often so that requests
/// waiting for the first token are not held for a whole refresh interval.
pub const STARTUP_RETRY_MS: u64 = 100;

#[derive(Debug)]
struct FileSlot {
    path: String,
    content: Option<Vec<u8>>,
    attempted: bool,
    /// When the fetch in flight started, if one is.
    in_flight_since: Option<u64>,
    last_failure: Option<String>,
}

#[derive(Debug)]
pub struct Refresher {
    files: Vec<FileSlot>,
    interval_ms: u64,
    /// A fetch unanswered for this long is lost (its context went away).
    lost_after_ms: u64,
    next_due_ms: u64,
    token: Option<Token>,
}

/// What a finished fetch changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Changed,
    /// The last good content stays in use; the message is safe to log.
    /// `repeated`: the previous fetch of this file failed the same way.
    Failed {
        message: String,
        repeated: bool,
    },
}

impl Refresher {
    /// `paths[0]` is the token; the rest are identity files.
    pub fn new(paths: &[&str], interval_ms: u64, lost_after_ms: u64) -> Refresher {
        Refresher {
            files: paths
                .iter()
                .map(|path| FileSlot {
                    path: path.to_string(),
                    content: None,
                    attempted: false,
                    in_flight_since: None,
                    last_failure: None,
                })
                .collect(),
            interval_ms,
            lost_after_ms,
            next_due_ms: 0,
            token: None,
        }
    }

    /// The files to fetch now, as (index, path); they count as in flight until
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
            let pause = if self.is_ready() {
                self.interval_ms
            } else {
                STARTUP_RETRY_MS.min(self.interval_ms)
            };
            self.next_due_ms = now_ms.saturating_add(pause);
        }
        due
    }

    /// Records a fetch's result: the body of a 200, or why there is none.
    pub fn complete(&mut self, index: usize, fetched: Result<Vec<u8>, String>) -> Outcome {
        let Some(slot) = self.files.get_mut(index) else {
            return Outcome::Unchanged;
        };
        slot.in_flight_since = None;
        slot.attempted = true;
        let is_new = |content: &Vec<u8>| slot.content.as_ref() != Some(content);
        let checked = match fetched {
            Ok(content) if index == 0 && is_new(&content) => Token::parse(&content)
                .map(|token| (content, Some(token)))
                .map_err(|problem| problem.to_string()),
            Ok(content) => Ok((content, None)),
            Err(reason) => Err(reason),
        };
        let (content, token) = match checked {
            Ok(checked) => checked,
            Err(reason) => {
                let message = format!("{}: {reason}", slot.path);
                let repeated = slot.last_failure.as_ref() == Some(&message);
                slot.last_failure = Some(message.clone());
                return Outcome::Failed { message, repeated };
            }
        };
        slot.last_failure = None;
        if !is_new(&content) {
            return Outcome::Unchanged;
        }
        slot.content = Some(content);
        if token.is_some() {
            self.token = token;
        }
        Outcome::Changed
    }

    /// Why the token file could not be used on its last read, if it could not.
    pub fn token_failure(&self) -> Option<&str> {
        self.files.first()?.last_failure.as_deref()
    }

    pub fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    /// A token is on hand and every identity file has been tried once, so a
    /// request forwarded now carries everything it will ever carry.
    pub fn is_ready(&self) -> bool {
        self.token.is_some() && self.files.iter().all(|slot| slot.attempted)
    }

    pub fn path(&self, index: usize) -> Option<&str> {
        self.files.get(index).map(|slot| slot.path.as_str())
    }
}

/// Environment variables fixed at VM start plus the files on hand.
pub struct PodSources<'a, E: Fn(&str) -> Option<String>> {
    pub refresher: &'a Refresher,
    pub env: E,
}

impl<E: Fn(&str) -> Option<String>> Sources for PodSources<'_, E> {
    fn env(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    fn file(&self, path: &str) -> Option<&[u8]> {
        self.refresher
            .files
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

    #[test]
    fn fetches_everything_then_waits_for_the_interval() {
        let mut refresher = Refresher::new(&[TOKEN, LABELS], 1000, 5000);
        assert_eq!(paths(refresher.due(0)), [TOKEN, LABELS]);
        assert_eq!(refresher.due(50), []);
        assert_eq!(refresher.complete(0, Ok(b"t1".to_vec())), Outcome::Changed);
        assert!(!refresher.is_ready(), "labels not tried yet");
        assert_eq!(
            refresher.complete(1, Err("HTTP 404".into())),
            Outcome::Failed {
                message: format!("{LABELS}: HTTP 404"),
                repeated: false
            }
        );
        assert!(
            refresher.is_ready(),
            "a missing labels file does not hold requests"
        );
        // Before readiness the retry pause was short; the next round is due.
        assert_eq!(paths(refresher.due(100)), [TOKEN, LABELS]);
        assert_eq!(refresher.due(1099), []);
        assert_eq!(
            refresher.complete(0, Ok(b"t1".to_vec())),
            Outcome::Unchanged
        );
        assert_eq!(
            refresher.complete(1, Ok(b"a=\"b\"".to_vec())),
            Outcome::Changed
        );
        assert_eq!(paths(refresher.due(1100)), [TOKEN, LABELS]);
    }

    #[test]
    fn a_file_still_in_flight_is_not_fetched_twice() {
        let mut refresher = Refresher::new(&[TOKEN, LABELS], 10, 5000);
        refresher.due(0);
        refresher.complete(1, Ok(Vec::new()));
        assert_eq!(paths(refresher.due(10)), [LABELS]);
    }

    #[test]
    fn the_last_good_token_survives_bad_reads() {
        let mut refresher = Refresher::new(&[TOKEN], 1000, 5000);
        refresher.due(0);
        refresher.complete(0, Ok(b"good-token\n".to_vec()));
        for bad in [
            Err("HTTP 503".to_string()),
            Ok(Vec::new()),
            Ok(b"two words".to_vec()),
        ] {
            refresher.due(u64::MAX);
            let outcome = refresher.complete(0, bad);
            assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
            assert_eq!(
                refresher.token().unwrap().authorization(),
                "Bearer good-token"
            );
        }
        refresher.complete(0, Ok(b"rotated".to_vec()));
        assert_eq!(refresher.token().unwrap().authorization(), "Bearer rotated");
    }

    #[test]
    fn failure_messages_never_contain_the_token() {
        let mut refresher = Refresher::new(&[TOKEN], 1000, 5000);
        refresher.due(0);
        let Outcome::Failed { message, .. } = refresher.complete(0, Ok(b"secret part".to_vec()))
        else {
            panic!("a token with a space must be refused");
        };
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn a_fetch_lost_with_its_context_is_retried() {
        let mut refresher = Refresher::new(&[TOKEN], 10, 5000);
        assert_eq!(paths(refresher.due(0)), [TOKEN]);
        assert_eq!(refresher.due(4999), []);
        assert_eq!(paths(refresher.due(5000)), [TOKEN]);
    }

    #[test]
    fn repeated_failures_are_marked() {
        let mut refresher = Refresher::new(&[TOKEN], 10, 5000);
        let mut fail = |now, reason: &str| {
            refresher.due(now);
            match refresher.complete(0, Err(reason.into())) {
                Outcome::Failed { repeated, .. } => repeated,
                other => panic!("{other:?}"),
            }
        };
        assert!(!fail(0, "HTTP 503"));
        assert!(fail(100, "HTTP 503"));
        assert!(!fail(200, "HTTP 404"));
    }

    #[test]
    fn never_ready_without_a_token() {
        let mut refresher = Refresher::new(&[TOKEN], 1000, 5000);
        refresher.due(0);
        refresher.complete(0, Err("HTTP 404".into()));
        assert!(!refresher.is_ready());
        assert_eq!(
            refresher.token_failure(),
            Some("/serviceaccount/token: HTTP 404")
        );
        assert_eq!(paths(refresher.due(STARTUP_RETRY_MS)), [TOKEN]);
        refresher.complete(0, Ok(b"t".to_vec()));
        assert_eq!(refresher.token_failure(), None);
    }

    #[test]
    fn sources_serve_the_last_good_content() {
        let mut refresher = Refresher::new(&[TOKEN, LABELS], 1000, 5000);
        refresher.due(0);
        refresher.complete(1, Ok(b"a=\"1\"".to_vec()));
        refresher.due(2000);
        refresher.complete(1, Err("reset".into()));
        let sources = PodSources {
            refresher: &refresher,
            env: |name: &str| (name == "X").then(|| "y".to_string()),
        };
        assert_eq!(sources.file(LABELS), Some(&b"a=\"1\""[..]));
        assert_eq!(sources.file(TOKEN), None);
        assert_eq!(sources.env("X").as_deref(), Some("y"));
        assert_eq!(refresher.path(1), Some(LABELS));
        assert_eq!(refresher.path(9), None);
    }
}
