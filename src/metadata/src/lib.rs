//! Cluster metadata for weir: the metadata records, the image they build, and Kafka's config
//! definitions.
//!
//! # Design
//!
//! Metadata changes are records in a log (KRaft's design). A [`record::MetadataRecord`] is a
//! versioned enum with a stable binary encoding; [`image::MetadataImage::apply`] folds records
//! into the in-memory image that every request handler reads. A single node keeps the log in
//! a local file; the controller quorum replicates the same records, so moving the log into
//! Raft changes where it lives, not what it holds. [`config`] defines the topic and broker
//! configs with Kafka's names, types, defaults and validation.
//!
//! Nothing here does I/O, reads a clock or draws randomness: topic ids arrive in records.
//!
//! # Invariants
//!
//! * `apply` is deterministic: the same records in the same order give the same image.
//! * A record that does not fit the image (a partition of an unknown topic) is refused with an
//!   error and leaves the image unchanged.
//! * Every encoded record decodes to itself.
//!
//! # Example
//!
//! ```
//! use metadata::{image::MetadataImage, record::{MetadataRecord, TopicId}};
//! let mut image = MetadataImage::default();
//! image.apply(&MetadataRecord::Topic { name: "orders".into(), topic_id: TopicId([7; 16]) }).expect("a new topic fits");
//! assert!(image.topic("orders").is_some());
//! ```

#![deny(missing_docs)]

pub mod config;
pub mod image;
pub mod ops;
pub mod record;

pub use image::MetadataImage;
pub use record::MetadataRecord;
