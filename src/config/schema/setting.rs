//! [`Setting`]: a key that an outer table (`[vrrp]`, `[bgp]`, `[health]`,
//! `[service.health]`) gives every inner table, which may override it.
//!
//! Owns: remembering whether a value was written in the table at hand
//! (`own`), so a combination error points at the line that made it, and
//! reading a key or inheriting it ([`Setting::read_or_inherit`]).

use super::super::reader::{At, Section};

/// A key an outer table gives every inner table, which may override it.
#[derive(Clone)]
pub(crate) struct Setting<T> {
    /// `None` when the value written was invalid (and reported); span
    /// `None` for the built-in default.
    pub at: Option<At<T>>,
    /// Written in the table at hand, not inherited or built in.
    pub own: bool,
}

impl<T: Clone> Setting<T> {
    pub(crate) fn builtin(value: T) -> Self {
        Setting {
            at: Some(At { value, span: None }),
            own: false,
        }
    }

    /// The same value, as seen from a table that did not write it.
    pub(crate) fn inherited(&self) -> Self {
        Setting {
            at: self.at.clone(),
            own: false,
        }
    }

    /// `key` from `s` (with `read`) when written there, else `base`'s
    /// value, inherited.
    pub(crate) fn read_or_inherit(
        s: &Section,
        key: &str,
        base: &Setting<T>,
        read: impl FnOnce() -> Option<At<T>>,
    ) -> Self {
        if s.has(key) {
            Setting {
                at: read(),
                own: true,
            }
        } else {
            base.inherited()
        }
    }
}

impl<T> Setting<T> {
    pub(crate) fn value(&self) -> Option<&T> {
        self.at.as_ref().map(|a| &a.value)
    }

    /// The value if written in the table at hand.
    pub(crate) fn own_at(&self) -> Option<&At<T>> {
        self.at.as_ref().filter(|_| self.own)
    }
}
