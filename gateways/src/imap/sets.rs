//! Pure helpers of the IMAP session: sequence sets against a mailbox's UIDs, LIST
//! patterns, message sections (header, text, chosen header fields).

use imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

/// Whether `value` is in `set`, where `*` stands for `largest`. Never expands ranges, so
/// `1:4294967295` costs nothing.
pub fn contains(set: &SequenceSet, value: u32, largest: u32) -> bool {
    set.0.as_ref().iter().any(|sequence| {
        let (first, last) = bounds(sequence, largest);
        first <= value && value <= last
    })
}

/// A sequence's first and last number, `*` standing for `largest` (`5:2` is 2 to 5).
fn bounds(sequence: &Sequence, largest: u32) -> (u32, u32) {
    let value = |number: &SeqOrUid| match number {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => largest,
    };
    match sequence {
        Sequence::Single(one) => (value(one), value(one)),
        Sequence::Range(a, b) => (value(a).min(value(b)), value(a).max(value(b))),
    }
}

/// The `(sequence number, UID)` pairs of `uids` (a mailbox in UID order) that `set`
/// names, by UID or by sequence number.
pub fn select(set: &SequenceSet, uids: &[u32], by_uid: bool) -> Vec<(u32, u32)> {
    if by_uid {
        let largest = uids.last().copied().unwrap_or(0);
        uids.iter()
            .enumerate()
            .filter(|&(_, &uid)| contains(set, uid, largest))
            .map(|(i, &uid)| (i as u32 + 1, uid))
            .collect()
    } else {
        let largest = uids.len() as u32;
        uids.iter()
            .enumerate()
            .filter(|&(i, _)| contains(set, i as u32 + 1, largest))
            .map(|(i, &uid)| (i as u32 + 1, uid))
            .collect()
    }
}

/// Whether a sequence-number set names a message beyond the last one (a client error).
pub fn beyond(set: &SequenceSet, exists: u32) -> bool {
    set.0.as_ref().iter().any(|sequence| {
        let over = |s: &SeqOrUid| matches!(s, SeqOrUid::Value(v) if v.get() > exists);
        match sequence {
            Sequence::Single(s) => over(s),
            Sequence::Range(a, b) => over(a) && over(b),
        }
    })
}

/// LIST pattern matching with `*` (anything) and `%` (anything but the delimiter `/`),
/// by dynamic programming: pattern length × name length, whatever the wildcards.
pub fn matches(pattern: &str, name: &str) -> bool {
    // INBOX matches case-insensitively.
    let pattern: Vec<char> =
        if name == "INBOX" { pattern.to_uppercase().chars().collect() } else { pattern.chars().collect() };
    let name: Vec<char> = name.chars().collect();
    // reach[j]: the pattern so far matches the first j characters of the name.
    let mut reach = vec![false; name.len() + 1];
    reach[0] = true;
    for &p in &pattern {
        let mut next = vec![false; name.len() + 1];
        for j in 0..=name.len() {
            next[j] = match p {
                '*' => reach[j] || (j > 0 && next[j - 1]),
                '%' => reach[j] || (j > 0 && name[j - 1] != '/' && next[j - 1]),
                c => j > 0 && reach[j - 1] && name[j - 1] == c,
            };
        }
        reach = next;
    }
    reach[name.len()]
}

/// Where a message's header section ends (after the empty line), or its length.
fn header_end(raw: &[u8]) -> usize {
    raw.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or_else(|| raw.windows(2).position(|w| w == b"\n\n").map_or(raw.len(), |p| p + 2), |p| p + 4)
}

/// The header section, including the empty line that ends it.
pub fn header(raw: &[u8]) -> &[u8] {
    &raw[..header_end(raw)]
}

/// The body after the header section.
pub fn text(raw: &[u8]) -> &[u8] {
    &raw[header_end(raw)..]
}

/// The header fields named (or, with `exclude`, not named) in `names`, with their
/// continuation lines, followed by the empty line (RFC 3501 HEADER.FIELDS).
pub fn header_fields(raw: &[u8], names: &[String], exclude: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in header(raw).split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let named = names.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name.trim_ascii()));
            keep = named != exclude;
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The UIDs of `known` (all of `1..uid_next` without it) that are not in `present`
/// (sorted), as runs: what QRESYNC's `VANISHED (EARLIER)` reports. Ranges are walked, not
/// expanded, so `1:4000000000` costs what the mailbox holds.
pub fn vanished(known: Option<&SequenceSet>, present: &[u32], uid_next: u32) -> Vec<(u32, u32)> {
    let largest = uid_next.saturating_sub(1);
    let ranges: Vec<(u32, u32)> = match known {
        None => vec![(1, largest)],
        Some(set) => set.0.as_ref().iter().map(|sequence| bounds(sequence, largest)).collect(),
    };
    let mut gone: Vec<(u32, u32)> = Vec::new();
    for (first, last) in ranges {
        let (first, last) = (first.max(1), last.min(largest));
        if first > last {
            continue;
        }
        let mut next = first;
        let start = present.partition_point(|&uid| uid < first);
        for &uid in present[start..].iter().take_while(|&&uid| uid <= last) {
            if uid > next {
                gone.push((next, uid - 1));
            }
            next = uid + 1;
        }
        if next <= last {
            gone.push((next, last));
        }
    }
    gone.sort_unstable();
    // Overlapping ranges in `known` must not report a UID twice.
    let mut merged: Vec<(u32, u32)> = Vec::new();
    for (first, last) in gone {
        match merged.last_mut() {
            Some((_, end)) if first <= end.saturating_add(1) => *end = (*end).max(last),
            _ => merged.push((first, last)),
        }
    }
    merged
}

/// `<origin.length>` of a partial fetch.
pub fn partial(data: &[u8], origin: u32, length: u32) -> &[u8] {
    let start = (origin as usize).min(data.len());
    let end = start.saturating_add(length as usize).min(data.len());
    &data[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> SequenceSet {
        SequenceSet::try_from(text).unwrap()
    }

    #[test]
    fn vanished_is_what_the_client_knows_and_the_mailbox_no_longer_holds() {
        let present = [3, 5, 9, 12];
        assert_eq!(vanished(None, &present, 14), [(1, 2), (4, 4), (6, 8), (10, 11), (13, 13)]);
        assert_eq!(vanished(Some(&set("1:6")), &present, 14), [(1, 2), (4, 4), (6, 6)]);
        assert_eq!(vanished(Some(&set("4,9,11:20")), &present, 14), [(4, 4), (11, 11), (13, 13)]);
        assert_eq!(vanished(Some(&set("2:4,3:6")), &present, 14), [(2, 2), (4, 4), (6, 6)], "overlaps once");
        assert_eq!(vanished(Some(&set("1:4000000000")), &[], 3), [(1, 2)], "ranges are not expanded");
        assert!(vanished(None, &[], 1).is_empty(), "an empty, never used mailbox");
    }

    #[test]
    fn sets_select_by_uid_and_by_sequence_number() {
        let uids = [3, 5, 9, 12];
        assert_eq!(select(&set("1:*"), &uids, true), [(1, 3), (2, 5), (3, 9), (4, 12)]);
        assert_eq!(select(&set("6:10"), &uids, true), [(3, 9)]);
        assert_eq!(select(&set("*"), &uids, true), [(4, 12)]);
        assert_eq!(select(&set("2,4"), &uids, false), [(2, 5), (4, 12)]);
        assert_eq!(select(&set("3:*"), &uids, false), [(3, 9), (4, 12)]);
        assert_eq!(select(&set("1:4294967295"), &uids, true).len(), 4, "huge ranges are not expanded");
        assert!(select(&set("1:*"), &[], true).is_empty());
        assert!(beyond(&set("5"), 4) && !beyond(&set("1:*"), 4) && !beyond(&set("4"), 4));
    }

    #[test]
    fn list_patterns() {
        assert!(matches("*", "Archive/2025"));
        assert!(!matches("%", "Archive/2025"));
        assert!(matches("%", "Archive"));
        assert!(matches("Archive/%", "Archive/2025"));
        assert!(matches("inbox", "INBOX"));
        assert!(!matches("Sent", "Sent Items"));
        assert!(matches("A%/%", "A1/b") && !matches("A%", "A1/b"));
        // Many wildcards against a long name: no exponential backtracking.
        let name = "a".repeat(200);
        assert!(!matches(&format!("{}b", "*a".repeat(30)), &name));
    }

    #[test]
    fn sections() {
        let raw = b"Subject: hi\r\nX-Long: a\r\n b\r\nFrom: x@y\r\n\r\nbody\r\n";
        assert_eq!(header(raw), b"Subject: hi\r\nX-Long: a\r\n b\r\nFrom: x@y\r\n\r\n");
        assert_eq!(text(raw), b"body\r\n");
        assert_eq!(header_fields(raw, &["x-long".into()], false), b"X-Long: a\r\n b\r\n\r\n");
        assert_eq!(header_fields(raw, &["X-Long".into()], true), b"Subject: hi\r\nFrom: x@y\r\n\r\n");
        assert_eq!(partial(b"0123456789", 2, 3), b"234");
        assert_eq!(partial(b"0123", 10, 3), b"");
    }
}
