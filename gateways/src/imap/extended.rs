//! Command forms imap-codec does not parse yet, taken apart before it sees the command
//! (pure): ESEARCH's `SEARCH RETURN (...)` (RFC 4731) and LIST-EXTENDED's selection and
//! return options with LIST-STATUS (RFC 5258, RFC 5819). The options are cut out of the
//! command line, which imap-codec then parses as the plain command, and handed to the
//! session beside it.

use std::borrow::Cow;

/// What a client asked for beyond the plain command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Extension {
    #[default]
    None,
    /// `SEARCH RETURN (...)`: answer with ESEARCH.
    SearchReturn(SearchReturn),
    /// An extended LIST.
    List(ListOptions),
}

/// ESEARCH return options (RFC 4731); none given means ALL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchReturn {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
}

/// LIST-EXTENDED selection and return options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Selection: only subscribed mailboxes (which say so: `\Subscribed`).
    pub subscribed: bool,
    /// Selection: parents of matching subscribed mailboxes are listed with CHILDINFO.
    pub recursive_match: bool,
    /// Selection: only special-use mailboxes (RFC 6154).
    pub special_use: bool,
    /// Return: `\Subscribed` on subscribed mailboxes.
    pub return_subscribed: bool,
    /// Return (LIST-STATUS): these STATUS items after each mailbox, e.g. `MESSAGES UNSEEN`.
    pub status: Option<String>,
    /// Further patterns after the first (`LIST "" ("INBOX" "Sent")`).
    pub more_patterns: Vec<String>,
}

/// Splits the extension off `message` (a whole command, literals included); the message
/// unchanged and [`Extension::None`] when there is none, or when it is malformed (imap-codec
/// then answers as for any bad command).
pub fn split(message: &[u8]) -> (Cow<'_, [u8]>, Extension) {
    let unchanged = (Cow::Borrowed(message), Extension::None);
    let Some(line_end) = message.iter().position(|&b| b == b'\n') else { return unchanged };
    let line = &message[..line_end];
    let mut tokens = Tokens { text: line, at: 0 };
    let Some(tag) = tokens.word() else { return unchanged };
    let mut command = tokens.word().unwrap_or_default().to_ascii_uppercase();
    let mut prefix = format!("{} ", String::from_utf8_lossy(tag));
    if command == b"UID" {
        prefix.push_str("UID ");
        command = tokens.word().unwrap_or_default().to_ascii_uppercase();
    }
    let rebuilt = |prefix: &str, command: &str, rest: &[u8]| -> Cow<'_, [u8]> {
        let mut out = format!("{prefix}{command} ").into_bytes();
        out.extend_from_slice(rest);
        out.extend_from_slice(&message[line_end..]);
        Cow::Owned(out)
    };
    match command.as_slice() {
        b"SEARCH" => {
            if !tokens.word().is_some_and(|w| w.eq_ignore_ascii_case(b"RETURN")) {
                return unchanged;
            }
            let Some(options) = tokens.list() else { return unchanged };
            let mut wanted = SearchReturn::default();
            for option in &options {
                match option.to_ascii_uppercase().as_str() {
                    "MIN" => wanted.min = true,
                    "MAX" => wanted.max = true,
                    "ALL" => wanted.all = true,
                    "COUNT" => wanted.count = true,
                    // SAVE (RFC 5182) and others are not offered.
                    _ => return unchanged,
                }
            }
            if options.is_empty() {
                wanted.all = true;
            }
            (rebuilt(&prefix, "SEARCH", tokens.rest()), Extension::SearchReturn(wanted))
        }
        b"LIST" => {
            let mut options = ListOptions::default();
            let mut extended = false;
            let before_selection = tokens.at;
            if let Some(selection) = tokens.list() {
                extended = true;
                for option in selection {
                    match option.to_ascii_uppercase().as_str() {
                        "SUBSCRIBED" => (options.subscribed, options.return_subscribed) = (true, true),
                        "RECURSIVEMATCH" => options.recursive_match = true,
                        "SPECIAL-USE" => options.special_use = true,
                        "REMOTE" => {}
                        _ => return unchanged,
                    }
                }
            } else {
                tokens.at = before_selection;
            }
            let Some(reference) = tokens.string() else { return unchanged };
            let patterns = match tokens.list() {
                Some(patterns) if !patterns.is_empty() => {
                    extended = true;
                    patterns
                }
                Some(_) => return unchanged,
                None => match tokens.string() {
                    Some(pattern) => vec![pattern],
                    None => return unchanged,
                },
            };
            if tokens.word().is_some_and(|w| w.eq_ignore_ascii_case(b"RETURN")) {
                extended = true;
                let Some(returns) = tokens.return_list() else { return unchanged };
                for (option, argument) in returns {
                    match (option.to_ascii_uppercase().as_str(), argument) {
                        ("SUBSCRIBED", None) => options.return_subscribed = true,
                        ("CHILDREN" | "SPECIAL-USE", None) => {}
                        ("STATUS", Some(items)) => options.status = Some(items),
                        _ => return unchanged,
                    }
                }
            }
            if !tokens.rest().is_empty() && tokens.rest() != b"\r" {
                return unchanged;
            }
            if options.recursive_match && !options.subscribed {
                // RFC 5258 3: RECURSIVEMATCH needs another selection option.
                return unchanged;
            }
            if !extended {
                return unchanged;
            }
            options.more_patterns = patterns[1..].to_vec();
            let plain = format!("{} {}\r", quote(&reference), quote(&patterns[0]));
            (rebuilt(&prefix, "LIST", plain.as_bytes()), Extension::List(options))
        }
        _ => unchanged,
    }
}

fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A cursor over one command line.
struct Tokens<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Tokens<'a> {
    fn skip_spaces(&mut self) {
        while self.text.get(self.at) == Some(&b' ') {
            self.at += 1;
        }
    }

    /// What is left of the line, from its next word on.
    fn rest(&mut self) -> &'a [u8] {
        self.skip_spaces();
        &self.text[self.at..]
    }

    /// An atom (up to a space, a parenthesis or the line's end).
    fn word(&mut self) -> Option<&'a [u8]> {
        self.skip_spaces();
        let start = self.at;
        while self.text.get(self.at).is_some_and(|&b| !matches!(b, b' ' | b'(' | b')' | b'\r' | b'"')) {
            self.at += 1;
        }
        (self.at > start).then(|| &self.text[start..self.at])
    }

    /// A quoted string or an atom, as text.
    fn string(&mut self) -> Option<String> {
        self.skip_spaces();
        if self.text.get(self.at) != Some(&b'"') {
            return self.word().map(|w| String::from_utf8_lossy(w).into_owned());
        }
        self.at += 1;
        let mut out = Vec::new();
        loop {
            match *self.text.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return String::from_utf8(out).ok();
                }
                b'\\' => {
                    out.push(*self.text.get(self.at + 1)?);
                    self.at += 2;
                }
                byte => {
                    out.push(byte);
                    self.at += 1;
                }
            }
        }
    }

    /// `(a b "c")`, as its strings; `None` (and nothing consumed) if no list is here.
    fn list(&mut self) -> Option<Vec<String>> {
        self.skip_spaces();
        if self.text.get(self.at) != Some(&b'(') {
            return None;
        }
        let start = self.at;
        self.at += 1;
        let mut items = Vec::new();
        loop {
            self.skip_spaces();
            match self.text.get(self.at) {
                Some(b')') => {
                    self.at += 1;
                    return Some(items);
                }
                Some(_) => match self.string() {
                    Some(item) => items.push(item),
                    None => {
                        self.at = start;
                        return None;
                    }
                },
                None => {
                    self.at = start;
                    return None;
                }
            }
        }
    }

    /// LIST's return options: `(SUBSCRIBED STATUS (MESSAGES UNSEEN))`, each option with
    /// its parenthesized argument, if any, as text.
    fn return_list(&mut self) -> Option<Vec<(String, Option<String>)>> {
        self.skip_spaces();
        if self.text.get(self.at) != Some(&b'(') {
            return None;
        }
        self.at += 1;
        let mut options = Vec::new();
        loop {
            self.skip_spaces();
            if self.text.get(self.at) == Some(&b')') {
                self.at += 1;
                return Some(options);
            }
            let name = String::from_utf8_lossy(self.word()?).into_owned();
            self.skip_spaces();
            let argument = if self.text.get(self.at) == Some(&b'(') {
                let items = self.list()?;
                Some(items.join(" "))
            } else {
                None
            };
            options.push((name, argument));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_text(command: &str) -> (String, Extension) {
        let (rewritten, extension) = split(command.as_bytes());
        (String::from_utf8(rewritten.into_owned()).unwrap(), extension)
    }

    #[test]
    fn search_return_options_are_cut_out() {
        let (line, extension) = split_text("a1 UID SEARCH RETURN (MIN COUNT) UNSEEN SINCE 1-Mar-2026\r\n");
        assert_eq!(line, "a1 UID SEARCH UNSEEN SINCE 1-Mar-2026\r\n");
        assert_eq!(extension, Extension::SearchReturn(SearchReturn { min: true, count: true, ..Default::default() }));
        let (line, extension) = split_text("a2 SEARCH RETURN () FLAGGED\r\n");
        assert_eq!(line, "a2 SEARCH FLAGGED\r\n");
        assert_eq!(extension, Extension::SearchReturn(SearchReturn { all: true, ..Default::default() }));
        // Literals after the line travel along untouched.
        let (line, _) = split_text("a3 SEARCH RETURN (ALL) CHARSET UTF-8 SUBJECT {3+}\r\nabc\r\n");
        assert_eq!(line, "a3 SEARCH CHARSET UTF-8 SUBJECT {3+}\r\nabc\r\n");
        for plain in ["a4 SEARCH UNSEEN\r\n", "a5 SEARCH RETURN (SAVE) ALL\r\n", "a6 FETCH 1 FLAGS\r\n"] {
            assert_eq!(split_text(plain), (plain.to_string(), Extension::None), "{plain}");
        }
    }

    #[test]
    fn list_options_are_cut_out() {
        let (line, extension) =
            split_text("b1 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\" RETURN (CHILDREN STATUS (MESSAGES UNSEEN))\r\n");
        assert_eq!(line, "b1 LIST \"\" \"%\"\r\n");
        let expected = ListOptions {
            subscribed: true,
            recursive_match: true,
            return_subscribed: true,
            status: Some("MESSAGES UNSEEN".into()),
            ..Default::default()
        };
        assert_eq!(extension, Extension::List(expected));
        let (line, extension) = split_text("b2 LIST \"\" (INBOX \"Sent\") RETURN (SPECIAL-USE)\r\n");
        assert_eq!(line, "b2 LIST \"\" \"INBOX\"\r\n");
        assert_eq!(
            extension,
            Extension::List(ListOptions { more_patterns: vec!["Sent".into()], ..Default::default() })
        );
        let (_, extension) = split_text("b3 LIST (SPECIAL-USE) \"\" *\r\n");
        assert_eq!(extension, Extension::List(ListOptions { special_use: true, ..Default::default() }));
        for plain in ["b4 LIST \"\" *\r\n", "b5 LIST (RECURSIVEMATCH) \"\" *\r\n", "b6 LIST (BOGUS) \"\" *\r\n"] {
            assert_eq!(split_text(plain), (plain.to_string(), Extension::None), "{plain}");
        }
    }
}
