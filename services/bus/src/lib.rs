//! telerelay's use of RabbitMQ, in one place: the names and declarations of every exchange and
//! queue, publishing that waits for the broker's confirm, and connections that come back after a
//! broker restart or a node loss.
//!
//! The rules this crate enforces for everyone else:
//! - every publish is `mandatory` and persistent, and is awaited to its confirm with a timeout;
//!   an unroutable or nacked message is an error, never silence;
//! - every queue is a durable quorum queue with an explicit delivery limit and a dead-letter
//!   exchange, so the design holds on RabbitMQ 3.10 (no default limit) as on 4.x (default 20).

mod connection;
mod consume;
mod dead_letter;
mod depth;
mod headers;
pub mod messages;
mod names;
mod publish;
mod topology;
pub mod trace;

pub use connection::{BrokerAddresses, connect, reconnect_delay};
pub use consume::{Handled, consume_until};
pub use dead_letter::{DeadLetterFacts, REPLAY_OF_HEADER};
pub use depth::{QueueCounts, QueueDepth, queue_depths};
pub use headers::{DEAD_LETTER_HEADERS, DeadLetterReason, header_str};
pub use lapin;
pub use names::Names;
pub use publish::{OutgoingMessage, PublishError, Publisher};
pub use topology::{QueueSettings, Topology};
