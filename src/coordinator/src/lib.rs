//! The group coordinator as a pure state machine: Kafka's classic consumer-group protocol
//! (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, with generations, rebalance and session
//! timeouts and static membership) and committed offsets (OffsetCommit, OffsetFetch,
//! OffsetDelete, DeleteGroups).
//!
//! # Design
//!
//! Nothing here does I/O, reads a clock or draws randomness. The broker that leads a partition
//! of `__consumer_offsets` owns one [`GroupCoordinator`] for the groups placed on it, feeds it
//! requests with the time (`now_ms`), calls [`GroupCoordinator::tick`] when
//! [`GroupCoordinator::next_deadline_ms`] passes, and carries out the [`Output`]s in order:
//!
//! * [`Output::Persist`] carries a [`GroupRecord`] to append to the group's partition. The
//!   coordinator's state already includes it; the broker must make it durable (acks=all
//!   semantics) before it delivers any output that follows it, so no client learns of a
//!   generation or an offset a coordinator failover could forget.
//! * [`Output::Join`] and [`Output::Sync`] complete JoinGroup and SyncGroup requests that
//!   waited for the rest of the group (the answers that need no waiting are returned directly).
//!
//! A new coordinator (after a leadership change or a restart) rebuilds the state from the
//! partition: [`GroupCoordinator::replay`] folds the records in log order. Members come back
//! with fresh session timers; a group that was rebalancing comes back with its last stable
//! generation, so its members' next heartbeat or join continues from there.
//!
//! The protocol follows Kafka's `GroupCoordinator`/`ClassicGroup` (states Empty,
//! PreparingRebalance, CompletingRebalance, Stable, Dead):
//!
//! * A join by a new member adds it and starts a rebalance; the join phase ends when every
//!   member has rejoined or the largest rebalance timeout passed (members that did not rejoin
//!   are dropped). The first rebalance of an empty group waits `group.initial.rebalance.delay.ms`
//!   for more members. Then the generation is bumped, the protocol all members support with
//!   the most first-choice votes is chosen, the leader (kept if still a member) gets every
//!   member's metadata, and everyone waits for the leader's SyncGroup with the assignment.
//! * JoinGroup v4+ without a member id gets `MEMBER_ID_REQUIRED` and an id to join with
//!   (KIP-394); static members (`group.instance.id`, KIP-345) rejoin under a new member id
//!   without a rebalance when nothing changed, and an old member id of the same instance is
//!   fenced (`FENCED_INSTANCE_ID`).
//! * Heartbeats and every other request of a member reset its session timer; a session that
//!   expires removes the member and starts a rebalance.
//! * Offset commits are checked against the generation (`ILLEGAL_GENERATION`,
//!   `UNKNOWN_MEMBER_ID`, `REBALANCE_IN_PROGRESS`); a commit with no member and generation -1
//!   is accepted only while the group has no members (admin tools, manual assignment).
//!
//! Assignors run in the clients (range, roundrobin, sticky, cooperative-sticky); the
//! coordinator only carries their metadata and assignments as opaque bytes, so the eager and
//! the cooperative protocols both work as they do against Kafka.
//!
//! Errors are typed and carry the Kafka error code they answer with
//! ([`CoordinatorError::error_code`]).

mod codec;
mod coordinator;
mod group;

#[cfg(test)]
mod tests;

pub use codec::CodecError;
pub use coordinator::{
    CommitRequest, CommittedOffset, GroupCoordinator, GroupRecord, GroupSnapshot, GroupSummary, JoinRequest,
    JoinResult, JoinedMember, MemberDescription, Output, RequestId, SyncRequest,
};
pub use group::GroupState;

/// The internal topic that holds the groups and their committed offsets.
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The `__consumer_offsets` partition of a group, as Kafka places it:
/// `abs(groupId.hashCode()) % partitions`, with Java's `String.hashCode` over UTF-16 code
/// units, so a group has the same coordinator partition on weir as on Kafka.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    assert!(partitions > 0, "__consumer_offsets has partitions");
    let hash = group_id.encode_utf16().fold(0i32, |hash, unit| hash.wrapping_mul(31).wrapping_add(i32::from(unit)));
    (hash & 0x7fff_ffff) % partitions
}

/// Kafka's COORDINATOR_NOT_AVAILABLE.
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
/// Kafka's ILLEGAL_GENERATION.
pub const ILLEGAL_GENERATION: i16 = 22;
/// Kafka's INCONSISTENT_GROUP_PROTOCOL.
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
/// Kafka's INVALID_GROUP_ID.
pub const INVALID_GROUP_ID: i16 = 24;
/// Kafka's UNKNOWN_MEMBER_ID.
pub const UNKNOWN_MEMBER_ID: i16 = 25;
/// Kafka's INVALID_SESSION_TIMEOUT.
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
/// Kafka's REBALANCE_IN_PROGRESS.
pub const REBALANCE_IN_PROGRESS: i16 = 27;
/// Kafka's NON_EMPTY_GROUP.
pub const NON_EMPTY_GROUP: i16 = 68;
/// Kafka's GROUP_ID_NOT_FOUND.
pub const GROUP_ID_NOT_FOUND: i16 = 69;
/// Kafka's MEMBER_ID_REQUIRED.
pub const MEMBER_ID_REQUIRED: i16 = 79;
/// Kafka's GROUP_MAX_SIZE_REACHED.
pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
/// Kafka's FENCED_INSTANCE_ID.
pub const FENCED_INSTANCE_ID: i16 = 82;

/// The coordinator's settings, named after Kafka's broker configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// `group.min.session.timeout.ms`. Default 6000.
    pub group_min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`. Default 1800000.
    pub group_max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members. Default 3000.
    pub group_initial_rebalance_delay_ms: i32,
    /// `group.max.size`: members per group. Default 2147483647 (no limit).
    pub group_max_size: u32,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            group_max_size: i32::MAX as u32,
        }
    }
}

/// Why the coordinator refuses a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordinatorError {
    /// The group is being unloaded or deleted.
    #[error("the coordinator is not available for this group")]
    CoordinatorNotAvailable,
    /// The request's generation is not the group's.
    #[error("generation {generation_id} is not the group's generation {current}")]
    IllegalGeneration {
        /// The request's generation.
        generation_id: i32,
        /// The group's.
        current: i32,
    },
    /// The member's protocol type or protocols do not match the group's.
    #[error("the member's protocols do not match the group's")]
    InconsistentGroupProtocol,
    /// An empty or otherwise unusable group id.
    #[error("invalid group id {0:?}")]
    InvalidGroupId(String),
    /// The member is not (or no longer) in the group.
    #[error("unknown member id {0:?}")]
    UnknownMemberId(String),
    /// The session timeout is outside the broker's bounds.
    #[error("session timeout {session_timeout_ms} ms outside [{min_ms}, {max_ms}]")]
    InvalidSessionTimeout {
        /// Asked for.
        session_timeout_ms: i32,
        /// `group.min.session.timeout.ms`.
        min_ms: i32,
        /// `group.max.session.timeout.ms`.
        max_ms: i32,
    },
    /// The group is rebalancing: rejoin.
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    /// The group still has members.
    #[error("the group has members")]
    NonEmptyGroup,
    /// No such group.
    #[error("group {0:?} does not exist")]
    GroupIdNotFound(String),
    /// JoinGroup v4+ with no member id: join again with the one given (KIP-394).
    #[error("join again with member id {0:?}")]
    MemberIdRequired(String),
    /// The group has `group.max.size` members.
    #[error("the group has reached its maximum size {0}")]
    GroupMaxSizeReached(u32),
    /// Another member id now holds this static member's instance id.
    #[error("instance id {0:?} is held by a newer member")]
    FencedInstanceId(String),
}

impl CoordinatorError {
    /// The Kafka error code this refusal answers with.
    pub fn error_code(&self) -> i16 {
        match self {
            CoordinatorError::CoordinatorNotAvailable => COORDINATOR_NOT_AVAILABLE,
            CoordinatorError::IllegalGeneration { .. } => ILLEGAL_GENERATION,
            CoordinatorError::InconsistentGroupProtocol => INCONSISTENT_GROUP_PROTOCOL,
            CoordinatorError::InvalidGroupId(_) => INVALID_GROUP_ID,
            CoordinatorError::UnknownMemberId(_) => UNKNOWN_MEMBER_ID,
            CoordinatorError::InvalidSessionTimeout { .. } => INVALID_SESSION_TIMEOUT,
            CoordinatorError::RebalanceInProgress => REBALANCE_IN_PROGRESS,
            CoordinatorError::NonEmptyGroup => NON_EMPTY_GROUP,
            CoordinatorError::GroupIdNotFound(_) => GROUP_ID_NOT_FOUND,
            CoordinatorError::MemberIdRequired(_) => MEMBER_ID_REQUIRED,
            CoordinatorError::GroupMaxSizeReached(_) => GROUP_MAX_SIZE_REACHED,
            CoordinatorError::FencedInstanceId(_) => FENCED_INSTANCE_ID,
        }
    }
}
