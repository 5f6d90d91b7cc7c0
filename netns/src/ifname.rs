//! Link names the kernel accepts.
//!
//! Linux keeps interface names in `IFNAMSIZ` (16) bytes including the terminating NUL,
//! so a name longer than 15 bytes is refused by the kernel with an error that does not
//! say which name was too long. Checking here names it.

use std::fmt;

use crate::Error;

/// The longest link name the kernel takes (`IFNAMSIZ - 1`).
pub const MAX_LEN: usize = 15;

/// A network interface name of at most 15 bytes, without `/`, `:` or whitespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IfName(String);

impl IfName {
    pub fn new(name: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidLinkName {
            name: name.to_string(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("it is empty"));
        }
        if name.len() > MAX_LEN {
            return Err(invalid(
                "it is longer than 15 bytes (the kernel's IFNAMSIZ)",
            ));
        }
        if name == "." || name == ".." {
            return Err(invalid("the kernel reserves it"));
        }
        if name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(invalid("it contains '/', ':' or whitespace"));
        }
        Ok(IfName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Network namespace names become file names under `/run/netns`.
pub(crate) fn check_netns_name(name: &str) -> Result<(), Error> {
    let invalid = |reason| Error::InvalidNetnsName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() || name == "." || name == ".." {
        return Err(invalid("it must be a plain file name"));
    }
    if name.len() > 200 {
        return Err(invalid("it is longer than 200 bytes"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(invalid("it contains '/' or whitespace"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifteen_bytes_fit_and_sixteen_do_not() {
        assert!(IfName::new("trellis0").is_ok());
        assert!(IfName::new("abcdefghijklmno").is_ok());
        let err = IfName::new("abcdefghijklmnop").unwrap_err().to_string();
        assert!(
            err.contains("abcdefghijklmnop") && err.contains("IFNAMSIZ"),
            "{err}"
        );
    }

    #[test]
    fn separators_and_blanks_are_refused() {
        for bad in ["", "a/b", "a:b", "a b", ".", ".."] {
            assert!(IfName::new(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(check_netns_name("trellis0-web").is_ok());
        assert!(check_netns_name("../etc").is_err());
    }
}
