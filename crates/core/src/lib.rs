//! Portico's shared vocabulary: the response envelope and its business codes, the domain
//! newtypes that inputs are parsed into at the edge, ids, time and pagination.
//!
//! Every other crate depends on this one; it depends on no other Portico crate.

pub mod domain;
pub mod error;
pub mod http;
pub mod id;
pub mod page;
pub mod time;
pub mod trace;

pub use error::{Code, Error, Result};
