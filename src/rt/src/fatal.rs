//! Unrecoverable environmental failures: the process stops with a distinct exit status.

/// Why the node cannot go on. Each reason has its own exit status so that an operator (or the
/// fault harness) can tell them apart without reading logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatalReason {
    /// An fsync failed: the page cache can no longer be trusted to match the disk, so the only
    /// safe continuation is to restart and recover from what is on disk.
    FsyncFailed,
    /// On-disk state is corrupt beyond what recovery repairs (for example the metadata log).
    CorruptState,
    /// The data directory could not be opened or locked at start.
    DataDirUnusable,
}

impl FatalReason {
    /// The process exit status for this reason.
    pub fn exit_status(self) -> i32 {
        match self {
            FatalReason::FsyncFailed => 70,
            FatalReason::CorruptState => 71,
            FatalReason::DataDirUnusable => 72,
        }
    }
}

/// Stops the node. In production the process exits with the reason's status; in simulation the
/// node's task panics, which the simulator treats as a crash of that node.
pub fn fatal(reason: FatalReason, message: &str) -> ! {
    tracing::error!(?reason, message, "fatal");
    #[cfg(not(madsim))]
    {
        eprintln!("weir: fatal ({reason:?}): {message}");
        std::process::exit(reason.exit_status())
    }
    #[cfg(madsim)]
    {
        panic!("weir fatal ({reason:?}): {message}")
    }
}
