//! `portcullis audit`: reading the event log back, the way a portal's admin reads login
//! history. Filters are checked before the store is asked anything; results print as a table
//! for people or as JSON lines for tools.

use std::net::IpAddr;

use crate::config::{DurationError, parse_duration};
use crate::core::addr::AddrSet;
use crate::core::event::{Event, EventKind};
use crate::core::time::UnixTime;
use crate::store::EventFilter;

/// What `portcullis audit` was asked for, checked.
#[derive(Debug)]
pub struct Query {
    pub filter: EventFilter,
    /// Matched here, not in the store: folded the way the store folds logins, Unicode and all.
    login: Option<String>,
    addresses: Option<AddrSet>,
}

/// The filters as typed on the command line.
#[derive(Debug, Default)]
pub struct Filters<'a> {
    pub user: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub event: Option<&'a str>,
    pub since: Option<&'a str>,
}

/// A filter of `portcullis audit` that cannot be used: which, and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("--user must not be empty")]
    EmptyUser,
    #[error("--event: `{0}` is not an event; events are {known}", known = known_events())]
    UnknownEvent(String),
    #[error("--since: {0}")]
    Since(#[from] DurationError),
    #[error("--since must be longer than 0")]
    ZeroSince,
    #[error("--ip: {0}")]
    Ip(String),
}

fn known_events() -> String {
    let known: Vec<_> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
    known.join(", ")
}

impl Query {
    /// Checks every filter; the error names the bad one and what would be accepted.
    pub fn parse(filters: &Filters<'_>, now: UnixTime) -> Result<Query, FilterError> {
        let login = match filters.user.map(str::trim) {
            Some("") => return Err(FilterError::EmptyUser),
            other => other.map(str::to_lowercase),
        };
        let event = match filters.event {
            None => None,
            Some(name) => match EventKind::parse(name.trim()) {
                Some(kind) => Some(kind.as_str().to_string()),
                None => return Err(FilterError::UnknownEvent(name.to_string())),
            },
        };
        let since = match filters.since {
            None => None,
            Some(text) => {
                let d = parse_duration(text)?;
                if d.is_zero() {
                    return Err(FilterError::ZeroSince);
                }
                Some(now.saturating_sub(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
            }
        };
        let addresses = match filters.ip {
            None => None,
            Some(text) => Some(AddrSet::parse([text]).map_err(|errors| {
                let why = errors.into_iter().next().map(|(_, m)| m);
                FilterError::Ip(why.unwrap_or_default())
            })?),
        };
        Ok(Query {
            filter: EventFilter {
                // The store compares ASCII case only (its `lower`, and the index on it): it is
                // given an ASCII login, which it then finds exactly; any other is matched here,
                // over every event (`keeps`).
                login: login.clone().filter(|l| l.is_ascii()),
                event,
                since,
                limit: None,
                ip_ranges: addresses.as_ref().map(AddrSet::key_ranges),
            },
            login,
            addresses,
        })
    }

    /// The filters the store does not apply. An event matches `--ip` when its address is in
    /// the block; events without an address (commands run by an admin) never do.
    pub fn keeps(&self, event: &Event) -> bool {
        if let Some(login) = &self.login
            && event.login.to_lowercase() != *login
        {
            return false;
        }
        match &self.addresses {
            None => true,
            Some(set) => event
                .ip
                .parse::<IpAddr>()
                .is_ok_and(|ip| set.contains_ip(ip)),
        }
    }
}

/// The readable form: one line per event, oldest first, columns sized to their content.
pub fn table(events: &[Event]) -> String {
    const HEADS: [&str; 6] = [
        "TIME (UTC)",
        "EVENT",
        "LOGIN",
        "ADDRESS",
        "BROWSER",
        "DETAIL",
    ];
    let rows: Vec<[String; 6]> = events
        .iter()
        .map(|e| {
            [
                crate::core::time::rfc3339(e.ts)
                    .replace('T', " ")
                    .replace('Z', ""),
                cell(&e.event),
                cell(&e.login),
                cell(&e.ip),
                crate::policy::device::summary(&e.user_agent),
                cell(&e.detail),
            ]
        })
        .collect();
    let mut widths = HEADS.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(HEADS.map(String::from)).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Stored text came partly from clients (a typed login): nothing in it may move the terminal.
fn cell(text: &str) -> String {
    let safe = crate::policy::device::strip_unsafe_chars(text);
    if safe.is_empty() { "-".into() } else { safe }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixTime = 1_795_000_000;

    fn parse(f: Filters<'_>) -> Result<Query, String> {
        Query::parse(&f, NOW).map_err(|e| e.to_string())
    }

    #[test]
    fn filters_are_checked_with_clear_messages() {
        let bad = [
            (
                Filters {
                    event: Some("login_sucess"),
                    ..Filters::default()
                },
                "--event: `login_sucess` is not an event; events are login_success, login_failure",
            ),
            (
                Filters {
                    ip: Some("10.0.0.0/33"),
                    ..Filters::default()
                },
                "--ip: `10.0.0.0/33` is not an IP address",
            ),
            (
                Filters {
                    since: Some("3 weeks"),
                    ..Filters::default()
                },
                "--since: `3 weeks` is not a duration",
            ),
            (
                Filters {
                    since: Some("0"),
                    ..Filters::default()
                },
                "--since must be longer than 0",
            ),
            (
                Filters {
                    user: Some(" "),
                    ..Filters::default()
                },
                "--user must not be empty",
            ),
        ];
        for (filters, message) in bad {
            let err = parse(filters).unwrap_err();
            assert!(err.starts_with(message), "{err}");
        }
    }

    #[test]
    fn good_filters_become_a_store_filter_and_an_address_check() {
        let q = parse(Filters {
            user: Some("Alice@Example.com"),
            ip: Some("10.1.0.0/16"),
            event: Some("login_failure"),
            since: Some("2h"),
        })
        .unwrap();
        assert_eq!(q.login.as_deref(), Some("alice@example.com"));
        // An ASCII login is looked up by the store (its index), then checked here too.
        assert_eq!(q.filter.login.as_deref(), Some("alice@example.com"));
        assert_eq!(q.filter.event.as_deref(), Some("login_failure"));
        assert_eq!(q.filter.since, Some(NOW - 7200));
        let at = |ip: &str| {
            Event::new(EventKind::LoginFailure, NOW)
                .login("ALICE@example.COM")
                .client(ip, "")
        };
        assert!(q.keeps(&at("10.1.255.255")));
        assert!(q.keeps(&at("::ffff:10.1.0.1")));
        assert!(!q.keeps(&at("10.2.0.1")));
        assert!(!q.keeps(&at("")));
        let bob = Event::new(EventKind::LoginFailure, NOW)
            .login("bob")
            .client("10.1.0.1", "");
        assert!(!q.keeps(&bob));
        let unicode = Query::parse(
            &Filters {
                user: Some("ÉLODIE"),
                ..Filters::default()
            },
            NOW,
        );
        let unicode = unicode.unwrap();
        assert_eq!(
            unicode.filter.login, None,
            "the store cannot fold É: all are read"
        );
        assert!(unicode.keeps(&Event::new(EventKind::Logout, NOW).login("élodie")));
        let any = parse(Filters::default()).unwrap();
        assert!(any.keeps(&at("")));
        assert_eq!(any.filter.since, None);
    }

    #[test]
    fn the_table_lines_up_and_keeps_control_characters_out() {
        let events = [
            Event::new(EventKind::LoginSuccess, NOW)
                .login("alice@example.com")
                .client(
                    "10.1.2.3",
                    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                ),
            Event::new(EventKind::LoginFailure, NOW + 61)
                .login("bob\u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{202e}")
                .client("2001:db8::1", "curl/8.5.0")
                .detail("unknown_login\u{1b}[2J"),
            Event::new(EventKind::UserCreated, NOW + 3600).login("carol"),
        ];
        let text = table(&events);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("TIME (UTC)           EVENT"), "{text}");
        let words: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            words[..5],
            [
                "2026-11-18",
                "11:06:40",
                "login_success",
                "alice@example.com",
                "10.1.2.3"
            ],
            "{text}"
        );
        assert!(lines[1].contains("Chrome 120 on Linux"), "{text}");
        assert!(lines[2].contains("curl 8.5"), "{text}");
        assert!(lines[2].contains(" bob]52;c;cm0gLXJmIH4= "), "{text}");
        assert!(lines[2].ends_with("unknown_login[2J"), "{text}");
        assert!(
            lines[3].starts_with("2026-11-18 12:06:40  user_created   carol"),
            "{text}"
        );
        assert!(!text.contains(['\u{1b}', '\u{7}', '\u{202e}']), "{text}");
        // Columns line up: ADDRESS starts at the same place on every line.
        let col = lines[0].find("ADDRESS").unwrap();
        assert_eq!(&lines[1][col..col + 8], "10.1.2.3");
        assert_eq!(&lines[3][col..col + 1], "-");
    }
}
