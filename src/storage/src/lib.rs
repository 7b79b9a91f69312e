//! Storage for weir: the [`disk::Disk`] seam and the partition segment log.

pub mod disk;

pub use disk::{Disk, DiskFile, OpenMode, OsDisk, SharedDisk};
