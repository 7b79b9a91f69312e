//! The event trace of one simulated run, and its hash for determinism checks.
//!
//! Every scenario event (an operation's invocation and completion with values and offsets, a
//! nemesis action, the bytes a crash lost, a node incarnation starting) is appended as one line
//! prefixed with the simulated time. The lines are hashed with FNV-1a as they arrive, so two
//! runs of one seed on one commit must produce the same hash; the first events are kept so
//! that a mismatch can be located.
//!
//! madsim's own determinism check compares only its RNG draws; this trace sees what the
//! workload observed, which is what must be reproducible.

use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Events kept in memory (the hash covers all of them).
pub const EVENTS_KEPT_MAX: usize = 500_000;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `bytes`, continuing from `hash`.
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

#[derive(Debug)]
struct Inner {
    start: Instant,
    hash: u64,
    count: u64,
    last_event_ms: u64,
    events: Vec<String>,
    verbose: bool,
}

/// A run's trace; clones share it.
#[derive(Debug, Clone)]
pub struct Trace {
    inner: Arc<Mutex<Inner>>,
}

impl Trace {
    /// An empty trace whose clock starts now (create it inside the simulation). With
    /// `verbose`, every event is also printed to stderr.
    pub fn new(verbose: bool) -> Trace {
        Trace {
            inner: Arc::new(Mutex::new(Inner {
                start: Instant::now(),
                hash: FNV_OFFSET_BASIS,
                count: 0,
                last_event_ms: 0,
                events: Vec::new(),
                verbose,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("trace lock is never poisoned")
    }

    /// Simulated milliseconds since the trace started.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.lock().start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Appends an event.
    pub fn event(&self, text: impl Display) {
        let mut inner = self.lock();
        let elapsed = inner.start.elapsed();
        let line = format!("{:>6}.{:03} {text}", elapsed.as_secs(), elapsed.subsec_millis());
        inner.hash = fnv1a(inner.hash, line.as_bytes());
        inner.hash = fnv1a(inner.hash, b"\n");
        inner.count += 1;
        inner.last_event_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        if inner.verbose {
            eprintln!("{line}");
        }
        if inner.events.len() < EVENTS_KEPT_MAX {
            inner.events.push(line);
        }
    }

    /// The hash of every event so far.
    pub fn hash(&self) -> u64 {
        self.lock().hash
    }

    /// Simulated time of the last event, in ms since the start.
    pub fn last_event_ms(&self) -> u64 {
        self.lock().last_event_ms
    }

    /// Events so far.
    pub fn count(&self) -> u64 {
        self.lock().count
    }

    /// The kept events.
    pub fn events(&self) -> Vec<String> {
        self.lock().events.clone()
    }
}

/// Where two event lists first differ: (index, left, right), `None` if one is a prefix of the
/// other and they have the same length.
pub fn first_divergence(left: &[String], right: &[String]) -> Option<(usize, Option<String>, Option<String>)> {
    let common = left.iter().zip(right).position(|(a, b)| a != b);
    match common {
        Some(index) => Some((index, Some(left[index].clone()), Some(right[index].clone()))),
        None if left.len() == right.len() => None,
        None => {
            let index = left.len().min(right.len());
            Some((index, left.get(index).cloned(), right.get(index).cloned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_values() {
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn equal_traces_hash_equal_and_divergence_is_located() {
        let one = Trace::new(false);
        let two = Trace::new(false);
        for trace in [&one, &two] {
            trace.event("a");
            trace.event(format!("b {}", 1));
        }
        assert_eq!(one.count(), 2);
        let (left, right) = (one.events(), two.events());
        if left == right {
            assert_eq!(one.hash(), two.hash());
        }
        let changed = vec![left[0].clone(), "x".to_owned()];
        assert_eq!(first_divergence(&left, &changed).map(|d| d.0), Some(1));
        assert_eq!(first_divergence(&left, &left[..1]).map(|d| d.0), Some(1));
        assert_eq!(first_divergence(&left, &left), None);
    }
}
