//! The forms domain: form definitions, typed answers, their validation and visibility rules, and
//! the French administrative referential. Pure code: no tonic, sea_orm or async_nats here.

pub mod condition;
pub mod form;
pub mod geo;
pub mod ids;
pub mod procedure;
pub mod referentiel;
pub mod validate;
pub mod value;
