//! Inputs parsed into types that cannot hold garbage ("parse, don't validate"). Each
//! parser returns `Error::Validation` with a generic field name; callers re-label it with
//! [`crate::Error::at`] when the field lives elsewhere in the request.

mod cidr;
mod email;
mod json_pointer;
mod target;
mod text;
mod url;

pub use cidr::{Cidr, IpAllowlist};
pub use email::Email;
pub use json_pointer::JsonPointer;
pub use target::TargetPolicy;
pub use text::{Password, Text};
pub use url::{CallbackUrl, RedirectUri};
