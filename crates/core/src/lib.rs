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

/// The hash map of lookups made for every call (snapshot, token cache, limiter, upstream
/// pool) and of bulk work (call segments): foldhash instead of the standard SipHash, which
/// cost about 1 % of the thread serving calls. Its seed is random per process; the keys
/// are names an operator chose, digests, or addresses, none a client can aim collisions
/// with.
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastHasher>;
/// The hasher of `FastMap`, for sharding by a key's hash.
pub type FastHasher = foldhash::fast::RandomState;
