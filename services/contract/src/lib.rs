//! The wire contract shared with hospital information systems. These are prost types: they stop
//! at the edge of every service, where `domain` converts them into validated domain types.

/// Version 1 of the contract (`proto/telerelay/v1`).
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/telerelay.v1.rs"));
}

/// AMQP `content_type` of every telerelay message.
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// AMQP `type` property values, so a consumer can tell messages apart without decoding them.
pub mod message_type {
    pub const REVIEW_REQUEST: &str = "telerelay.v1.ReviewRequest";
    pub const ORIGIN_NOTICE: &str = "telerelay.v1.OriginNotice";
    pub const LIFECYCLE_EVENT: &str = "telerelay.v1.LifecycleEvent";
    pub const CRITICAL_NOTIFICATION: &str = "telerelay.v1.CriticalNotification";
    pub const CRITICAL_ACKNOWLEDGEMENT: &str = "telerelay.v1.CriticalAcknowledgement";
}
