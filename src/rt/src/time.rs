//! Time: sleeps, timeouts, monotonic instants, and the wall [`Clock`].

use std::fmt::Debug;
use std::sync::Arc;

pub use std::time::Duration;
pub use tokio::time::{interval, sleep, sleep_until, timeout, Instant, Interval, MissedTickBehavior};

/// The wall clock of a node, in milliseconds since the Unix epoch (Kafka's timestamp unit).
///
/// Required rather than calling `SystemTime::now()` directly so that the simulator can give each
/// node its own offset, drift and jumps; anything that stamps or compares wall time (record
/// timestamps for `LogAppendTime`, `retention.ms`, segment roll by `segment.ms`) must use it.
pub trait Clock: Send + Sync + Debug {
    /// Milliseconds since the Unix epoch. May jump backwards if the clock is stepped.
    fn now_ms(&self) -> i64;
}

/// The runtime's own wall clock: the OS clock in production, madsim's in simulation.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(elapsed) => i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The default shared clock.
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}
