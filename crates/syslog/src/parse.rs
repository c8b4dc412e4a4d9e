//! Syslog message parsing, RFC 5424 and the looser RFC 3164 ("BSD") form
//! that iPXE, busybox and most firmware send. Pure; never panics.

/// A parsed message. Fields a sender left out are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Facility number (0-23).
    pub facility: u8,
    /// Severity number (0 emergency … 7 debug).
    pub severity: u8,
    /// Sender's own timestamp, as written (unparsed: senders lie about time).
    pub timestamp: String,
    /// Sender's hostname, if given.
    pub hostname: String,
    /// Program name / tag (`ipxe`, `kernel`, `bellows-worker`).
    pub app: String,
    /// The text.
    pub text: String,
}

/// Why a datagram is not syslog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No `<PRI>` header.
    #[error("missing <PRI> header")]
    NoPriority,
    /// PRI out of range.
    #[error("priority {0} out of range (0-191)")]
    BadPriority(u32),
    /// Not UTF-8 even after lossy decoding makes sense? Never: kept for
    /// empty datagrams.
    #[error("empty message")]
    Empty,
}

/// Severity names, for display.
pub const SEVERITY: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses one datagram.
pub fn parse(datagram: &[u8]) -> Result<Message, ParseError> {
    let raw = String::from_utf8_lossy(datagram);
    let line = raw.trim_end_matches(['\n', '\r', '\0']);
    if line.is_empty() {
        return Err(ParseError::Empty);
    }
    let rest = line.strip_prefix('<').ok_or(ParseError::NoPriority)?;
    let end = rest
        .find('>')
        .filter(|e| (1..=3).contains(e))
        .ok_or(ParseError::NoPriority)?;
    let pri: u32 = rest[..end].parse().map_err(|_| ParseError::NoPriority)?;
    if pri > 191 {
        return Err(ParseError::BadPriority(pri));
    }
    let body = &rest[end + 1..];
    // Narrowing is exact: pri <= 191.
    let (facility, severity) = ((pri / 8) as u8, (pri % 8) as u8);
    let msg = match body.strip_prefix("1 ") {
        Some(v5424) => parse_5424(v5424),
        None => parse_3164(body),
    };
    Ok(Message {
        facility,
        severity,
        ..msg
    })
}

fn empty() -> Message {
    Message {
        facility: 0,
        severity: 0,
        timestamp: String::new(),
        hostname: String::new(),
        app: String::new(),
        text: String::new(),
    }
}

fn nil(s: &str) -> String {
    if s == "-" {
        String::new()
    } else {
        s.to_string()
    }
}

/// `TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [MSG]`
fn parse_5424(s: &str) -> Message {
    let mut parts = s.splitn(5, ' ');
    let timestamp = nil(parts.next().unwrap_or(""));
    let hostname = nil(parts.next().unwrap_or(""));
    let app = nil(parts.next().unwrap_or(""));
    let _procid = parts.next();
    let rest = parts.next().unwrap_or("");
    // MSGID, then structured data: `-` or one or more `[...]` elements.
    let after_msgid = rest.split_once(' ').map_or("", |(_, r)| r);
    let text = skip_structured_data(after_msgid);
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    Message {
        timestamp,
        hostname,
        app,
        text: text.to_string(),
        ..empty()
    }
}

fn skip_structured_data(s: &str) -> &str {
    if let Some(rest) = s.strip_prefix('-') {
        return rest.strip_prefix(' ').unwrap_or(rest);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    while bytes.get(i) == Some(&b'[') {
        // Inside an element: `]` ends it unless escaped; quotes hold values.
        let mut in_quotes = false;
        i += 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 1,
                b'"' => in_quotes = !in_quotes,
                b']' if !in_quotes => break,
                _ => {}
            }
            i += 1;
        }
        i += 1;
    }
    let rest = s.get(i.min(s.len())..).unwrap_or("");
    rest.strip_prefix(' ').unwrap_or(rest)
}

/// `Mmm dd hh:mm:ss HOSTNAME TAG[pid]: MSG`, with every part optional in
/// practice (iPXE sends `ipxe: text`, busybox omits the hostname).
fn parse_3164(s: &str) -> Message {
    let mut rest = s;
    let mut timestamp = String::new();
    if s.len() >= 16
        && MONTHS.iter().any(|m| s.starts_with(m))
        && s.as_bytes().get(15) == Some(&b' ')
        && s.get(9..10) == Some(":")
    {
        timestamp = s[..15].to_string();
        rest = &s[16..];
    }
    let mut hostname = String::new();
    // A first word without ':' or '[' followed by a tagged word is a hostname.
    if let Some((first, after)) = rest.split_once(' ')
        && !first.contains([':', '['])
        && after
            .split_whitespace()
            .next()
            .is_some_and(|w| w.ends_with(':') || w.contains("]:"))
    {
        hostname = first.to_string();
        rest = after;
    }
    let (app, text) = match rest.split_once(": ") {
        Some((tag, text)) if !tag.contains(' ') && !tag.is_empty() => {
            let app = tag.split('[').next().unwrap_or(tag);
            (app.to_string(), text.to_string())
        }
        _ => (String::new(), rest.to_string()),
    };
    Message {
        timestamp,
        hostname,
        app,
        text,
        ..empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5424() {
        let m = parse(b"<165>1 2026-11-21T11:00:00.003Z node1 bellows-worker 42 ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"App]\"] action started\n").unwrap();
        assert_eq!((m.facility, m.severity), (20, 5));
        assert_eq!(m.hostname, "node1");
        assert_eq!(m.app, "bellows-worker");
        assert_eq!(m.text, "action started");
        let nil = parse(b"<14>1 - - - - - - hello").unwrap();
        assert_eq!(
            (nil.hostname.as_str(), nil.app.as_str(), nil.text.as_str()),
            ("", "", "hello")
        );
    }

    #[test]
    fn rfc3164_and_what_firmware_sends() {
        let m = parse(b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed").unwrap();
        assert_eq!((m.facility, m.severity), (4, 2));
        assert_eq!(m.timestamp, "Oct 11 22:14:15");
        assert_eq!(m.hostname, "mymachine");
        assert_eq!(m.app, "su");
        assert_eq!(m.text, "'su root' failed");
        let ipxe = parse(b"<6>ipxe: Downloading http://10.0.0.1/vmlinuz").unwrap();
        assert_eq!(
            (ipxe.app.as_str(), ipxe.text.as_str()),
            ("ipxe", "Downloading http://10.0.0.1/vmlinuz")
        );
        let bb = parse(b"<13>Nov 21 11:00:01 init[1]: starting worker").unwrap();
        assert_eq!((bb.hostname.as_str(), bb.app.as_str()), ("", "init"));
        let plain = parse(b"<13>just text").unwrap();
        assert_eq!((plain.app.as_str(), plain.text.as_str()), ("", "just text"));
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        assert_eq!(parse(b""), Err(ParseError::Empty));
        assert_eq!(parse(b"no pri"), Err(ParseError::NoPriority));
        assert_eq!(parse(b"<>x"), Err(ParseError::NoPriority));
        assert_eq!(parse(b"<1234>x"), Err(ParseError::NoPriority));
        assert_eq!(parse(b"<192>x"), Err(ParseError::BadPriority(192)));
        for junk in [
            &b"<1>1 "[..],
            b"<1>1 [unterminated",
            b"<1>\xff\xfe",
            b"<1>Jan",
            br#"<1>1 - - - - [a="\"] "#,
        ] {
            let _ = parse(junk);
        }
        // Every prefix of a valid message parses or errors, never panics.
        let full = b"<165>1 2026-11-21T11:00:00Z h a p m [x y=\"]\"] text";
        for n in 0..full.len() {
            let _ = parse(&full[..n]);
        }
    }
}
