//! Credentials and secrets: password hashing (argon2id), the master key and the
//! encryption of secrets and sensitive fields at rest (AES-256-GCM), and opaque tokens.

pub mod master_key;
pub mod password;
pub mod token;

pub use master_key::MasterKey;
