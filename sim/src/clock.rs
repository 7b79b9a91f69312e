//! `SimClock`: a node's wall clock with its own offset, drift and jumps.
//!
//! madsim has one global clock. Each simulated node gets a `SimClock` (an `rt::time::Clock`)
//! that reads madsim's wall time and bends it: a fixed offset (skew), a rate error in parts per
//! million (drift), and steps forwards or backwards (jumps, as an NTP step or an operator would
//! cause). The clock is shared by every incarnation of a node, like a hardware clock that
//! survives a process restart; the scenario's nemesis changes it while the node runs.
//!
//! Reading the clock is a pure function of madsim's time and the clock's state, so runs stay
//! deterministic.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Largest drift accepted, in parts per million (a very bad crystal is about 100 ppm).
pub const DRIFT_PPM_MAX: i64 = 10_000;

#[derive(Debug)]
struct State {
    /// The clock's reading at `anchor`.
    base_ms: i64,
    /// The true (madsim) time of the last rebase.
    anchor: Instant,
    /// Rate error: the clock advances `1 + drift_ppm / 1e6` ms per true ms.
    drift_ppm: i64,
    /// Jumps so far, for the trace.
    jumps: u64,
}

impl State {
    fn read(&self, now: Instant) -> i64 {
        let elapsed_us = i64::try_from(now.saturating_duration_since(self.anchor).as_micros()).unwrap_or(i64::MAX / 2);
        let bent_us = elapsed_us
            + elapsed_us / 1_000_000 * self.drift_ppm
            + (elapsed_us % 1_000_000) * self.drift_ppm / 1_000_000;
        self.base_ms + bent_us / 1_000
    }

    fn rebase(&mut self, now: Instant) {
        self.base_ms = self.read(now);
        self.anchor = now;
    }
}

/// A node's wall clock; clones share the clock.
#[derive(Debug, Clone)]
pub struct SimClock {
    state: Arc<Mutex<State>>,
}

/// The runtime's true wall time in ms since the epoch (madsim's, in simulation).
pub fn true_now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(elapsed) => i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

impl SimClock {
    /// A clock `offset_ms` away from true time, drifting by `drift_ppm`.
    pub fn new(offset_ms: i64, drift_ppm: i64) -> SimClock {
        SimClock {
            state: Arc::new(Mutex::new(State {
                base_ms: true_now_ms() + offset_ms,
                anchor: Instant::now(),
                drift_ppm: drift_ppm.clamp(-DRIFT_PPM_MAX, DRIFT_PPM_MAX),
                jumps: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("SimClock lock is never poisoned")
    }

    /// Steps the clock by `delta_ms` (negative: backwards).
    pub fn jump(&self, delta_ms: i64) {
        let mut state = self.lock();
        state.rebase(Instant::now());
        state.base_ms += delta_ms;
        state.jumps += 1;
    }

    /// Changes the drift from now on.
    pub fn set_drift_ppm(&self, drift_ppm: i64) {
        let mut state = self.lock();
        state.rebase(Instant::now());
        state.drift_ppm = drift_ppm.clamp(-DRIFT_PPM_MAX, DRIFT_PPM_MAX);
    }

    /// How far the clock is from true time now, in ms (positive: ahead).
    pub fn offset_ms(&self) -> i64 {
        self.lock().read(Instant::now()) - true_now_ms()
    }

    /// The drift in force.
    pub fn drift_ppm(&self) -> i64 {
        self.lock().drift_ppm
    }

    /// Jumps so far.
    pub fn jumps(&self) -> u64 {
        self.lock().jumps
    }
}

impl rt::time::Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.lock().read(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rt::time::Clock;

    #[test]
    fn offset_drift_and_jumps_bend_the_reading() {
        let now = Instant::now();
        let mut state = State { base_ms: 1_000_000, anchor: now, drift_ppm: 1_000, jumps: 0 };
        // 10 s of true time at +1000 ppm reads 10.01 s.
        assert_eq!(state.read(now + std::time::Duration::from_secs(10)), 1_000_000 + 10_010);
        state.drift_ppm = -1_000;
        assert_eq!(state.read(now + std::time::Duration::from_secs(10)), 1_000_000 + 9_990);
        state.rebase(now + std::time::Duration::from_secs(10));
        assert_eq!(state.base_ms, 1_009_990);

        let clock = SimClock::new(-5_000, 0);
        let before = clock.now_ms();
        assert!((true_now_ms() - before - 5_000).abs() < 1_000);
        clock.jump(-60_000);
        assert!(clock.now_ms() < before - 59_000, "a backwards jump reads earlier");
        assert_eq!(clock.jumps(), 1);
    }
}
