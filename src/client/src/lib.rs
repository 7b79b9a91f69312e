//! weir's native async Kafka client: a connection pool with a metadata cache ([`Client`]),
//! the admin API ([`admin`]), a batching producer ([`producer`]) and a consumer of assigned
//! partitions ([`consumer`]). It speaks the Kafka protocol to weir and to any Kafka broker.
//!
//! # Design
//!
//! Everything that touches the environment goes through `rt`: sockets, timers, tasks,
//! channels, the RNG and the wall clock. The same code therefore runs in production on tokio
//! and unchanged inside the madsim simulator, where weir's simulated cluster is driven by
//! this client.
//!
//! * [`Client`] holds one pipelined connection per broker address (a writer task and a reader
//!   task matching responses to requests by correlation id) and a metadata cache. Each
//!   connection starts with the ApiVersions handshake (v3, falling back per KIP-511), and
//!   every request is sent at `min(client max, broker max)` ([`versions`]).
//! * The producer appends records to per-partition batches; one sender task sends ready
//!   batches, one Produce request per leader, retrying retriable errors.
//! * The consumer sends one Fetch per leader and decodes the batches itself.
//!
//! Layout: `config.rs` (client config), `connection.rs` (one broker connection),
//! `client.rs` (pool and metadata), `versions.rs`, `records.rs` (batch encode/decode),
//! `admin.rs`, `producer/` (`accumulator`, `partitioner`, `sender`), `consumer.rs`,
//! `error.rs`, `limits.rs`.
//!
//! # Invariants
//!
//! * Every bound (frame size, in-flight requests, queued frames, buffer memory, batch and
//!   request sizes, retries) is a constant in [`limits`] or a validated config field.
//! * A response frame's length is checked before it is allocated.
//! * Per-partition order is kept by the producer: at most one batch per partition in flight.
//! * A broken connection fails all its pending requests with a retriable error and is
//!   re-dialled on next use.
//!
//! # Example
//!
//! ```no_run
//! use client::producer::{Producer, ProducerConfig, ProducerRecord};
//! use client::{Client, ClientConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientConfig { bootstrap_servers: vec!["127.0.0.1:9092".into()], ..ClientConfig::default() };
//! let client = Client::connect(config).await?;
//! let admin = client::admin::Admin::new(&client);
//! admin.create_topics(&[client::admin::NewTopic::new("events")], false).await?;
//! let producer = Producer::new(client.clone(), ProducerConfig::default())?;
//! let metadata = producer.send_and_wait(ProducerRecord::new("events", "hello")).await?;
//! println!("written at offset {}", metadata.offset);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod admin;
mod client;
mod config;
mod connection;
pub mod consumer;
mod error;
pub mod group;
pub mod groups;
pub mod limits;
pub mod producer;
mod records;
pub mod versions;

pub use client::{BrokerInfo, Client, PartitionInfo};
pub use config::ClientConfig;
pub use connection::BrokerConnection;
pub use error::{ClientError, DisconnectCause, ProduceError};
