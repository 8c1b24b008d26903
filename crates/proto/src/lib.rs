//! The contracts of mst-dossiers: every gRPC API and event payload under `proto/`, compiled once.
//!
//! Services and clients depend on this crate only; nothing here holds domain logic.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod event;
#[cfg(feature = "json")]
pub mod json;

pub use event::{CATALOGUE, Event};

/// Encoded `FileDescriptorSet` of every proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mst_descriptor.bin"));

/// Generated code, one module per protobuf package.
pub mod pb {
    pub mod mst {
        pub mod events {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/mst.events.v1.rs"));
            }
        }
        pub mod forms {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/mst.forms.v1.rs"));
            }
        }
        pub mod instruction {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/mst.instruction.v1.rs"));
            }
        }
        pub mod messagerie {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/mst.messagerie.v1.rs"));
            }
        }
        pub mod oscars {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/mst.oscars.v1.rs"));
            }
        }
    }
}

pub use pb::mst::events::v1 as events;
pub use pb::mst::forms::v1 as forms;
pub use pb::mst::instruction::v1 as instruction;
pub use pb::mst::messagerie::v1 as messagerie;
pub use pb::mst::oscars::v1 as oscars;
