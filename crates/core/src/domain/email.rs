use std::fmt;

use crate::Error;

/// An email address, lower-cased, checked for the shape a mail server will accept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(input: &str) -> Result<Email, Error> {
        let s = input.trim();
        let bad = |why: &str| Err(Error::validation("email", why.to_string()));
        if s.is_empty() {
            return bad("is required");
        }
        if s.len() > 254 {
            return bad("is longer than 254 characters");
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return bad("must contain @");
        };
        if local.is_empty() || local.len() > 64 {
            return bad("the part before @ must be 1 to 64 characters");
        }
        if local.contains('@') || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return bad("the part before @ is not valid");
        }
        let local_ok = local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c) || (!c.is_ascii() && !c.is_control() && !c.is_whitespace()));
        if !local_ok {
            return bad("the part before @ has a character that is not allowed");
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return bad("the domain must have a dot (example.com)");
        }
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric()));
            if !ok {
                return bad("the domain is not valid");
            }
        }
        Ok(Email(s.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_and_normalises() {
        assert_eq!(Email::parse(" Alice@Example.COM ").unwrap().as_str(), "alice@example.com");
        assert!(Email::parse("a.b+tag@sub.example.cn").is_ok());
    }

    #[test]
    fn rejects() {
        for bad in ["", "alice", "@example.com", "alice@", "alice@example", "a@@b.com", "a b@c.com", "a@-b.com", "a..b@c.com", "a@b..com"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            let _ = Email::parse(&s);
        }

        #[test]
        fn parsed_is_stable(s in "[a-z0-9._+-]{1,20}@[a-z0-9-]{1,10}\\.[a-z]{2,5}") {
            if let Ok(e) = Email::parse(&s) {
                prop_assert_eq!(Email::parse(e.as_str()).unwrap(), e);
            }
        }
    }
}
