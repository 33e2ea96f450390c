//! Group names: the one validated key every other module uses to address a group.
//!
//! A group name follows the rule Django Channels uses, `^[A-Za-z0-9_.-]{1,100}$`, so names are
//! safe to embed unescaped in JSON frames and Redis channel names. The *namespace* of a group is
//! the text before its first `.` (`chat.lobby` is in namespace `chat`); namespaces carry per-group
//! policy such as whether clients may publish.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest accepted group name, in bytes.
pub const MAX_GROUP_LEN: usize = 100;

/// The first character of Herald's own groups' names, which no valid name has.
const RESERVED: char = '~';

/// Why a string is not a valid group name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidGroup {
    #[error("group name is empty")]
    Empty,
    #[error("group name is longer than {MAX_GROUP_LEN} characters")]
    TooLong,
    #[error("group name may only contain ASCII letters, digits, '_', '.' and '-' (found {0:?})")]
    BadChar(char),
}

/// A validated group name. Cheap to clone: the text is shared.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupName(Arc<str>);

impl GroupName {
    /// Validates `name` against `^[A-Za-z0-9_.-]{1,100}$`.
    pub fn new(name: &str) -> Result<Self, InvalidGroup> {
        validate(name)?;
        Ok(Self(Arc::from(name)))
    }

    /// A group of Herald's own (the gateways' control channel, say), named `~<name>`: no
    /// client, publisher or bridge can name it, since `~` is not a group character.
    pub(crate) fn reserved(name: &str) -> Self {
        Self(Arc::from(format!("{RESERVED}{name}")))
    }

    /// A valid group name or one of Herald's own (as read back from the broker's channels).
    pub(crate) fn new_or_reserved(name: &str) -> Result<Self, InvalidGroup> {
        match name.strip_prefix(RESERVED) {
            Some(own) => validate(own).map(|()| Self(Arc::from(name))),
            None => Self::new(name),
        }
    }

    /// Whether this is one of Herald's own groups, which is not counted or shown as a group.
    pub(crate) fn is_reserved(name: &str) -> bool {
        name.starts_with(RESERVED)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text before the first `.`, or the whole name when it has none.
    pub fn namespace(&self) -> &str {
        namespace_of(&self.0)
    }
}

/// The namespace of a group-like string (used for templates before they are filled in).
pub(crate) fn namespace_of(name: &str) -> &str {
    name.split_once('.').map_or(name, |(ns, _)| ns)
}

fn validate(name: &str) -> Result<(), InvalidGroup> {
    if name.is_empty() {
        return Err(InvalidGroup::Empty);
    }
    if let Some(c) = name.chars().find(|c| !is_group_char(*c)) {
        return Err(InvalidGroup::BadChar(c));
    }
    if name.len() > MAX_GROUP_LEN {
        return Err(InvalidGroup::TooLong);
    }
    Ok(())
}

fn is_group_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for GroupName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for GroupName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for GroupName {
    type Error = InvalidGroup;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl Serialize for GroupName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for GroupName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_channels_alphabet() {
        for ok in ["a", "chat.lobby", "A-b_c.9", &"x".repeat(100)] {
            assert!(GroupName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(GroupName::new(""), Err(InvalidGroup::Empty));
        assert_eq!(GroupName::new(&"x".repeat(101)), Err(InvalidGroup::TooLong));
        assert_eq!(GroupName::new("a b"), Err(InvalidGroup::BadChar(' ')));
        assert_eq!(GroupName::new("é"), Err(InvalidGroup::BadChar('é')));
        assert_eq!(GroupName::new("a\"b"), Err(InvalidGroup::BadChar('"')));
    }

    #[test]
    fn reserved_names_are_no_valid_name() {
        let control = GroupName::reserved("control");
        assert!(GroupName::is_reserved(control.as_str()));
        assert!(GroupName::new(control.as_str()).is_err());
        assert_eq!(GroupName::new_or_reserved(control.as_str()), Ok(control));
        assert!(GroupName::new_or_reserved("~a b").is_err());
        assert!(!GroupName::is_reserved("control"));
    }

    #[test]
    fn namespace_is_text_before_first_dot() {
        assert_eq!(GroupName::new("chat.room.1").unwrap().namespace(), "chat");
        assert_eq!(GroupName::new("plain").unwrap().namespace(), "plain");
        assert_eq!(GroupName::new(".x").unwrap().namespace(), "");
    }
}
