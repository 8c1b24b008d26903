//! The instruction domain: the dossier workflow state machine of DESIGN.md §3 — its
//! vocabulary ([`status`]), the free texts its commands carry ([`text`]), the pure
//! [`workflow::apply`] and its refusals ([`error`]), and the enumerated transition table
//! ([`table`]). Pure code: no tonic, sea_orm, async_nats or proto types here.

pub mod error;
pub mod status;
pub mod table;
pub mod text;
pub mod workflow;

pub use error::{ErrorCategory, TransitionError};
pub use status::{CorrectionReason, Status, TransitionKind, UnknownValue};
pub use text::{MAX_TEXT_CHARS, Message, Motivation, TextError, TextField};
pub use workflow::{
    Actor, ActorKind, Command, CommandKind, Context, DossierState, EventKind, FileRef,
    FollowOutcome, INITIAL_VERSION, InconsistentState, Performer, StateKey, StatusChange,
    Transition, WorkflowEvent, apply, follow, unfollow,
};
