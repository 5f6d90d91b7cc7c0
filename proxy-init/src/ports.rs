//! Ports as operators write them: one port (`--inbound-port 4143`) or a list of ports
//! and ranges (`--skip-outbound-ports 25,443,8000-8100`).
//!
//! Parsed here, with errors that name the flag they came from, so a typo is reported
//! before anything touches the kernel.

use std::fmt;

use crate::error::{Error, PortListError, env_of};

/// One entry of a port list: a port, or an inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortSpec {
    Single(u16),
    /// `first < last`; a range of one port is parsed as [`PortSpec::Single`].
    Range {
        first: u16,
        last: u16,
    },
}

impl PortSpec {
    /// How many of the 15 slots of one `-m multiport` match this entry takes: the kernel
    /// stores a range as its two ends.
    pub fn slots(self) -> usize {
        match self {
            PortSpec::Single(_) => 1,
            PortSpec::Range { .. } => 2,
        }
    }

    /// The nftables spelling: `443`, or `8000-8100` for a range.
    pub fn nft(self) -> String {
        match self {
            PortSpec::Single(port) => port.to_string(),
            PortSpec::Range { first, last } => format!("{first}-{last}"),
        }
    }
}

impl fmt::Display for PortSpec {
    /// The iptables spelling: `443`, or `8000:8100` for a range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Single(port) => write!(f, "{port}"),
            PortSpec::Range { first, last } => write!(f, "{first}:{last}"),
        }
    }
}

/// A list of ports and ranges as operators write it: `25,443,8000-8100`.
///
/// Order is kept (it is the order of the rendered rules) and exact duplicates are
/// dropped, since each costs a multiport slot and matches nothing new.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortList(Vec<PortSpec>);

impl PortList {
    /// Parses a comma-separated list; whitespace around entries is ignored and an empty
    /// (or all-blank) string is the empty list.
    pub fn parse(text: &str) -> Result<PortList, PortListError> {
        let mut specs = Vec::new();
        if text.trim().is_empty() {
            return Ok(PortList(specs));
        }
        for entry in text.split(',') {
            let spec = parse_spec(entry.trim())?;
            if !specs.contains(&spec) {
                specs.push(spec);
            }
        }
        Ok(PortList(specs))
    }

    /// [`PortList::parse`] for the value of `flag`, with an error naming the flag and
    /// its environment variable.
    pub fn for_flag(flag: &'static str, text: &str) -> Result<PortList, Error> {
        PortList::parse(text).map_err(|reason| Error::InvalidPorts {
            flag,
            env: env_of(flag),
            value: text.to_owned(),
            reason,
        })
    }

    /// Single ports, in order, without duplicates.
    pub fn of(ports: &[u16]) -> PortList {
        let mut specs = Vec::new();
        for &port in ports {
            if !specs.contains(&PortSpec::Single(port)) {
                specs.push(PortSpec::Single(port));
            }
        }
        PortList(specs)
    }

    pub fn specs(&self) -> &[PortSpec] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for PortList {
    /// As operators write it, `25,443,8000-8100`, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let specs: Vec<String> = self.0.iter().map(|spec| spec.nft()).collect();
        f.write_str(&specs.join(","))
    }
}

/// The value of a single-port flag such as `--inbound-port`.
pub fn port_for_flag(flag: &'static str, text: &str) -> Result<u16, Error> {
    parse_port(text.trim()).map_err(|reason| Error::InvalidPort {
        flag,
        env: env_of(flag),
        value: text.to_owned(),
        reason,
    })
}

fn parse_spec(entry: &str) -> Result<PortSpec, PortListError> {
    if entry.is_empty() {
        return Err(PortListError::EmptyEntry);
    }
    let Some((first, last)) = entry.split_once('-') else {
        return parse_port(entry).map(PortSpec::Single);
    };
    let (first, last) = (parse_port(first.trim())?, parse_port(last.trim())?);
    match first.cmp(&last) {
        std::cmp::Ordering::Less => Ok(PortSpec::Range { first, last }),
        std::cmp::Ordering::Equal => Ok(PortSpec::Single(first)),
        std::cmp::Ordering::Greater => Err(PortListError::BackwardsRange { first, last }),
    }
}

fn parse_port(text: &str) -> Result<u16, PortListError> {
    // `u16::from_str` would accept "+25"; an operator who wrote that meant something else.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortListError::NotANumber(text.to_owned()));
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        // Only digits, so a parse failure means too many of them.
        _ => Err(PortListError::OutOfRange(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(text: &str) -> Vec<PortSpec> {
        PortList::parse(text).expect("valid list").specs().to_vec()
    }

    #[test]
    fn an_empty_or_blank_list_skips_nothing() {
        assert!(specs("").is_empty());
        assert!(specs("  ").is_empty());
    }

    #[test]
    fn ports_and_ranges_keep_their_order() {
        assert_eq!(
            specs("25,443,8000-8100"),
            [
                PortSpec::Single(25),
                PortSpec::Single(443),
                PortSpec::Range {
                    first: 8000,
                    last: 8100
                },
            ]
        );
    }

    #[test]
    fn whitespace_duplicates_and_one_port_ranges_are_normalised() {
        assert_eq!(
            specs(" 25 , 443,25, 80-80 , 1 - 2"),
            [
                PortSpec::Single(25),
                PortSpec::Single(443),
                PortSpec::Single(80),
                PortSpec::Range { first: 1, last: 2 },
            ]
        );
    }

    #[test]
    fn malformed_lists_say_what_is_wrong() {
        let cases = [
            ("25,,443", PortListError::EmptyEntry),
            ("25,", PortListError::EmptyEntry),
            ("http", PortListError::NotANumber("http".into())),
            ("+25", PortListError::NotANumber("+25".into())),
            ("8000-", PortListError::NotANumber("".into())),
            ("0", PortListError::OutOfRange("0".into())),
            ("65536", PortListError::OutOfRange("65536".into())),
            (
                "99999999999999999999999",
                PortListError::OutOfRange("99999999999999999999999".into()),
            ),
            (
                "9000-8000",
                PortListError::BackwardsRange {
                    first: 9000,
                    last: 8000,
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(PortList::parse(text), Err(expected), "parsing {text:?}");
        }
    }

    #[test]
    fn the_error_names_the_flag_and_its_environment_variable() {
        let err = PortList::for_flag("--skip-outbound-ports", "443,x").expect_err("malformed");
        assert_eq!(
            err.to_string(),
            "invalid --skip-outbound-ports (env TRELLIS_SKIP_OUTBOUND_PORTS) \"443,x\": \
             \"x\" is not a port number; expected e.g. 25,443,8000-8100"
        );
        assert_eq!(err.exit_code(), crate::error::EXIT_USAGE);
    }

    #[test]
    fn a_single_port_flag_takes_one_port_and_says_so() {
        assert_eq!(port_for_flag("--inbound-port", " 15006 ").ok(), Some(15006));
        let err = port_for_flag("--admin-port", "4191,4192").expect_err("a list");
        assert_eq!(
            err.to_string(),
            "invalid --admin-port (env TRELLIS_ADMIN_PORT) \"4191,4192\": \
             \"4191,4192\" is not a port number; expected one port, 1-65535"
        );
        assert_eq!(err.exit_code(), crate::error::EXIT_USAGE);
    }

    #[test]
    fn slots_count_a_range_as_two() {
        assert_eq!(PortSpec::Single(1).slots(), 1);
        assert_eq!(PortSpec::Range { first: 1, last: 9 }.slots(), 2);
        assert_eq!(PortSpec::Range { first: 1, last: 9 }.to_string(), "1:9");
        assert_eq!(PortSpec::Range { first: 1, last: 9 }.nft(), "1-9");
    }

    #[test]
    fn a_list_of_single_ports_drops_duplicates() {
        assert_eq!(PortList::of(&[4191, 4143, 4191]).to_string(), "4191,4143");
    }
}
