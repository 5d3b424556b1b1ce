//! Text helpers shared by every error type: messages stay on one line whatever a file, a path
//! or the OS put into them.

use std::fmt;

/// Displays a string with control characters (newlines, tabs, escapes) escaped.
pub struct OneLine<'a>(pub &'a str);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// `impl From<Source> for Error` for an error enum whose variants wrap other errors:
/// `error_from!(Error: Source => Variant, …)` wraps directly, and
/// `error_from!(Error, via Variant: Source, …)` converts into the variant's type first.
macro_rules! error_from {
    ($target:ty: $($source:ty => $variant:ident),+ $(,)?) => {
        $(impl From<$source> for $target {
            fn from(e: $source) -> Self {
                Self::$variant(e)
            }
        })+
    };
    ($target:ty, via $variant:ident: $($source:ty),+ $(,)?) => {
        $(impl From<$source> for $target {
            fn from(e: $source) -> Self {
                Self::$variant(e.into())
            }
        })+
    };
}
pub(crate) use error_from;
