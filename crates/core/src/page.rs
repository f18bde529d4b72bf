//! Keyset pagination: lists are ordered by id (ids sort by creation time) and a page ends
//! with the cursor to pass for the next one.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::Error;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

/// `?limit=&cursor=` on every list endpoint.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A validated page request.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<String>,
}

impl PageQuery {
    pub fn validate(&self) -> Result<PageRequest, Error> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(Error::validation("limit", format!("must be between 1 and {MAX_LIMIT}")));
        }
        let after = match &self.cursor {
            Some(c) if !is_id_like(c) => {
                return Err(Error::validation("cursor", "is not a cursor this API returned"));
            }
            other => other.clone(),
        };
        Ok(PageRequest { limit, after })
    }
}

/// Whether `s` could be an id this platform made (and so a cursor): 1 to 64 ASCII
/// letters, digits and `_`.
pub fn is_id_like(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest { limit: DEFAULT_LIMIT, after: None }
    }
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from rows fetched with `limit + 1`: the extra row only says that
    /// another page exists. `id` reads the cursor off an item.
    pub fn from_rows(mut rows: Vec<T>, limit: u32, id: impl Fn(&T) -> String) -> Self {
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(&id)
        } else {
            None
        };
        Page { items: rows, next_cursor }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { items: self.items.into_iter().map(f).collect(), next_cursor: self.next_cursor }
    }
}
