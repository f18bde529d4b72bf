use crate::Error;

/// A trimmed, non-empty line of text of bounded length without control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(String);

impl Text {
    pub fn parse(field: &str, input: &str, max_chars: usize) -> Result<Text, Error> {
        let s = input.trim();
        if s.is_empty() {
            return Err(Error::validation(field, "must not be empty"));
        }
        if s.chars().count() > max_chars {
            return Err(Error::validation(field, format!("must be at most {max_chars} characters")));
        }
        if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(Error::validation(field, "must not contain control characters"));
        }
        Ok(Text(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A new password: 10 to 128 characters, not all of one kind of character.
pub struct Password(String);

impl Password {
    pub fn parse(input: &str) -> Result<Password, Error> {
        let n = input.chars().count();
        if n < 10 {
            return Err(Error::validation("password", "must be at least 10 characters"));
        }
        if n > 128 {
            return Err(Error::validation("password", "must be at most 128 characters"));
        }
        let first = input.chars().next().unwrap_or_default();
        if input.chars().all(|c| c == first) {
            return Err(Error::validation("password", "must not repeat one character"));
        }
        Ok(Password(input.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rules() {
        assert_eq!(Text::parse("name", "  shop  ", 10).unwrap().as_str(), "shop");
        assert!(Text::parse("name", "   ", 10).is_err());
        assert!(Text::parse("name", "abcdefghijk", 10).is_err());
        assert!(Text::parse("name", "a\u{0}b", 10).is_err());
        assert_eq!(Text::parse("名称", "云上商店", 4).unwrap().as_str(), "云上商店");
    }

    #[test]
    fn password_rules() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("aaaaaaaaaaaa").is_err());
        assert!(Password::parse("correct horse").is_ok());
    }
}
