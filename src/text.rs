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
