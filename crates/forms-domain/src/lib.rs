//! The forms domain: form definitions, typed answers, their validation and visibility rules, and
//! the French administrative referential. Pure code: no tonic, sea_orm or async_nats here.
//!
//! It lives in its own light crate (chrono, regex, rust_decimal, serde, thiserror) so that the
//! fuzz targets of `tests/fuzz` build it without the service's dependencies; the forms service
//! re-exports it as `mst_forms::domain`. The reference data it embeds stays in
//! `services/forms/data/` and the shipped procedures in `services/forms/procedures/`.

#![forbid(unsafe_code)]

pub mod condition;
pub mod form;
pub mod geo;
pub mod ids;
pub mod procedure;
pub mod referentiel;
pub mod validate;
pub mod value;
