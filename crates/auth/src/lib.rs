//! Credentials and secrets: password hashing (argon2id), the master key and the
//! encryption of secrets and sensitive fields at rest (AES-256-GCM), opaque tokens, and
//! the verification of signed requests with replay protection.

pub mod master_key;
pub mod password;
pub mod replay;
pub mod signed_request;
pub mod token;

pub use master_key::MasterKey;
