//! The control plane's console domain: platform accounts and roles, sign-in sessions,
//! merchants and their onboarding, apps and their credentials, the audit log; and the
//! versioned management API that exposes them (`api`).
//!
//! [`Platform`] is the one door to these operations. The HTTP API and the `portico` CLI
//! both call it, so a rule enforced here holds on every route.

pub mod api;
pub mod analytics;
pub mod apps;
pub mod audit;
pub mod catalog;
pub mod merchants;
pub mod messaging;
pub mod operators;
mod platform;
pub mod principal;
pub mod sessions;

pub use platform::{Change, ConsoleSettings, Platform};
pub use principal::{Principal, Role};
