//! The relay's domain: what a review request is once it has been checked, the lifecycle states,
//! and the conversions between these types and the protobuf wire contract.
//!
//! Everything outside this crate works with validated domain types; prost structs appear only in
//! [`wire`], where every missing or out-of-range field becomes a typed [`Rejection`].

mod codes;
mod event;
mod request;
mod state;
pub mod wire;

pub use codes::{HospitalCode, OriginRequestId, PoolCode, ReviewerId};
pub use event::{EventError, LifecycleFact};
pub use request::{
    EcgLead, EcgStudy, ImagingStudy, PathologyCase, Patient, ReviewRequest, Sex, Slide, Study,
};
pub use state::{Priority, RequestState, StudyKind};
pub use wire::{Rejection, RejectionReason, ReturnReason};
