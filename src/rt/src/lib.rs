//! The runtime seam: networking, time, tasks, synchronisation, randomness, `buggify` and
//! `fatal`, for every weir crate that does I/O.
//!
//! # Design
//!
//! weir runs the same node code in production (on tokio) and in the deterministic simulator
//! (on madsim). The switch is a compile-time cfg: with `RUSTFLAGS="--cfg madsim"` the
//! `tokio` dependency (which is `madsim-tokio`) re-exports madsim's simulated runtime, and
//! without it the real tokio. Only this crate and `sim/` may name either runtime; everything
//! else imports `rt::net`, `rt::time`, `rt::task`, `rt::sync` and `rt::rand`, so the simulator
//! sees every socket, timer, task and random draw of a node.
//!
//! Wall-clock time reaches logic through the [`time::Clock`] trait rather than
//! `SystemTime::now()`, so the simulator can give each node its own offset, drift and jumps.
//!
//! # Invariants
//!
//! * Nothing here spawns an OS thread except `task::spawn_blocking` in production mode, which
//!   is how `OsDisk` keeps blocking file calls off the async workers.
//! * Under `cfg(madsim)` every random draw comes from madsim's seeded RNG.
//!
//! # Example
//!
//! ```
//! # async fn demo() {
//! let started = rt::time::Instant::now();
//! rt::time::sleep(std::time::Duration::from_millis(1)).await;
//! assert!(started.elapsed() >= std::time::Duration::from_millis(1));
//! # }
//! ```

pub mod fatal;
pub mod time;

pub use fatal::{fatal, FatalReason};

/// Sockets: TCP listeners and streams of the active runtime.
/// Process signals for graceful shutdown.
pub mod signal {
    /// Completes on Ctrl-C or SIGTERM (in simulation: on madsim's simulated Ctrl-C).
    pub async fn shutdown() {
        #[cfg(not(madsim))]
        {
            let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let terminated = async {
                match terminate.as_mut() {
                    Some(signal) => {
                        let _ = signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = terminated => {}
            }
        }
        #[cfg(madsim)]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Waits on several futures at once and runs the branch of the first to complete (the
/// runtime's `select!`).
pub use tokio::select;

/// Dedicated OS threads, for the one dependency that must own a thread: raft-engine (blocking
/// file I/O and thread-local caches). Under madsim the runtime must allow system threads.
pub mod thread {
    /// Starts a named OS thread running `work`.
    ///
    /// # Errors
    /// The OS refused to create the thread.
    pub fn spawn<F>(name: String, work: F) -> std::io::Result<std::thread::JoinHandle<()>>
    where
        F: FnOnce() + Send + 'static,
    {
        std::thread::Builder::new().name(name).spawn(work)
    }
}

pub mod net {
    pub use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
}

/// Async I/O traits and helpers (`AsyncReadExt`, `split`, buffered writers).
pub mod io {
    pub use tokio::io::*;
}

/// Synchronisation primitives of the active runtime.
pub mod sync {
    pub use tokio::sync::*;
}

/// Tasks of the active runtime.
pub mod task {
    pub use tokio::task::{yield_now, JoinHandle};

    /// Spawns a future on the runtime; in simulation it runs on the current node.
    pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::spawn(future)
    }

    /// Runs a blocking closure off the async workers. In simulation there are no workers to
    /// protect and no threads to spawn, so the closure runs inline.
    pub async fn spawn_blocking<F, R>(work: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        #[cfg(not(madsim))]
        {
            match tokio::task::spawn_blocking(work).await {
                Ok(result) => result,
                Err(error) => std::panic::resume_unwind(error.into_panic()),
            }
        }
        #[cfg(madsim)]
        {
            work()
        }
    }
}

/// Randomness. Every draw in a node goes through here so that the simulator controls it.
pub mod rand {
    pub use madsim::rand::{thread_rng, Rng, RngCore};

    /// A fresh random `u64` from the runtime's RNG.
    pub fn random_u64() -> u64 {
        thread_rng().gen()
    }

    /// Sixteen random bytes, for topic ids and other UUIDs.
    pub fn random_uuid_bytes() -> [u8; 16] {
        let mut bytes = [0u8; 16];
        thread_rng().fill_bytes(&mut bytes);
        bytes
    }
}

/// Fault injection points (FoundationDB's BUGGIFY). Always false outside the simulator; in the
/// simulator true with madsim's probability once the scenario enables it.
pub fn buggify() -> bool {
    #[cfg(madsim)]
    {
        madsim::buggify::buggify()
    }
    #[cfg(not(madsim))]
    {
        false
    }
}

/// Runtime construction for the `weir` binary and tests.
pub mod runtime {
    /// Builds the production multi-threaded runtime.
    ///
    /// # Errors
    /// Returns the OS error if the runtime's threads cannot be created.
    #[cfg(not(madsim))]
    pub fn build(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread().worker_threads(worker_threads.max(1)).enable_all().build()
    }
}
