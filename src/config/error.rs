//! [`ConfigError`], and how an error is located: the line and column of a byte offset, the
//! dotted key of a parser or serde error (recovered from its path, or from the text around
//! it), the line of an over-deep key.
//!
//! Must never lose the location: every error the parser, serde or validation reports comes
//! out as a `ConfigError` naming the file and, where the text allows, the line and the key.

use std::fmt;
use std::ops::Range;

use super::validate::Ctx;

/// A configuration error, located in the file where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File name (or origin) of the configuration.
    pub file: String,
    /// 1-based line, when the error can be located.
    pub line: Option<usize>,
    /// 1-based column (in characters), when the error can be located.
    pub column: Option<usize>,
    /// Dotted key, like `readiness.timeout`, when known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The keys of the file's top level that are not tables: written under a `[table]`, they
/// belong to it.
pub const TOP_LEVEL_KEYS: [&str; 6] = [
    "command",
    "instances",
    "control",
    "cwd",
    "release",
    "handover",
];

/// For an error at `table.key` where `key` is a top-level key, the hint that it was meant
/// above the first table (TOML puts every key after a `[table]` header into that table).
fn top_level_hint(key: Option<&str>) -> Option<String> {
    let (table, name) = key?.split_once('.')?;
    if table.is_empty() || name.contains('.') || !TOP_LEVEL_KEYS.contains(&name) {
        return None;
    }
    Some(format!(
        "; `{name}` is a top-level key: put it above the first [table] (here it is read as \
         part of [{table}])"
    ))
}

impl ConfigError {
    /// The error with the hint of [`top_level_hint`], when its key calls for it.
    fn hinted(mut self) -> ConfigError {
        if let Some(h) = top_level_hint(self.key.as_deref()) {
            self.message.push_str(&h);
        }
        self
    }
}

impl Ctx<'_> {
    pub(super) fn err(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = match span {
            Some(span) => {
                let (l, c) = line_col(self.text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ConfigError {
            file: self.origin.to_string(),
            line,
            column,
            key: Some(key.into()),
            message: message.into(),
        }
        .hinted()
    }

    /// Converts a parser or serde error, recovering the dotted key.
    pub(super) fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let mut message = e.message().to_string();
        // The parser's recursion limit (a key or header with hundreds of dots) comes without
        // a location: it is the line with the most deeply dotted key.
        let span = e.span().or_else(|| {
            let line = deepest_dotted_line(self.text)?;
            message = format!("{message}: the key is nested too deeply");
            let start: usize = self
                .text
                .split_inclusive('\n')
                .take(line - 1)
                .map(str::len)
                .sum();
            Some(start..start)
        });
        let (line, column) = match &span {
            Some(span) => {
                let (l, c) = line_col(self.text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        // The error knows the path of tables it went through, but only shows
        // it (as a trailing "in `a.b`" line) when rendered without the input.
        let mut bare = e.clone();
        bare.set_input(None);
        let rendered = bare.to_string();
        let mut path: Vec<String> = rendered
            .strip_prefix(&message)
            .and_then(|r| r.strip_prefix("\nin `"))
            .and_then(|r| r.strip_suffix("`\n"))
            .filter(|p| !p.is_empty())
            .map(|p| vec![p.to_string()])
            .unwrap_or_default();
        if let Some(field) = backticked_after(&message, "unknown field `") {
            path.push(field.to_string());
        }
        let key = if path.is_empty() {
            span.and_then(|s| key_at(self.text, s.start))
        } else {
            Some(path.join("."))
        };
        // a key as long as a line is shown by its start
        let key = key.map(|k| match k.char_indices().nth(80) {
            Some((i, _)) => format!("{}…", &k[..i]),
            None => k,
        });
        ConfigError {
            file: self.origin.to_string(),
            line,
            column,
            key,
            message,
        }
        .hinted()
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..off].chars().count() + 1)
}

/// The text between `prefix` and the next backtick in `message`.
fn backticked_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    Some(&rest[..rest.find('`')?])
}

/// Best-effort dotted key for an error at `offset` (used for syntax errors): the key whose
/// array or inline-table value is still open at that line (`command = ["a"` then a line
/// `instances = 2`: the missing `]` or `,` is `command`'s), else the key assigned on that line,
/// prefixed by the last `[table]` header, or the header itself when the error is on a header
/// line.
pub(super) fn key_at(text: &str, offset: usize) -> Option<String> {
    let (line_no, _) = line_col(text, offset);
    let mut table = String::new();
    let qualified = |table: &str, k: &str| match table.is_empty() {
        true => k.to_string(),
        false => format!("{table}.{k}"),
    };
    // the key whose value has brackets still open, and how many
    let mut open: Option<(String, i32)> = None;
    for (i, line) in text.lines().enumerate() {
        if i + 1 == line_no {
            if let Some((k, _)) = open {
                return Some(k);
            }
            if let Some(h) = table_header(line) {
                return Some(h);
            }
            let (k, _) = line.split_once('=')?;
            let k = k.trim();
            if k.is_empty() || k.starts_with('#') {
                return None;
            }
            return Some(qualified(&table, k));
        }
        if let Some((k, depth)) = open.take() {
            let depth = depth + nesting(line);
            open = (depth > 0).then_some((k, depth));
        } else if let Some(h) = table_header(line) {
            table = h;
        } else if let Some((k, v)) = line.split_once('=') {
            let depth = nesting(v);
            open = (depth > 0).then(|| (qualified(&table, k.trim()), depth));
        }
    }
    None
}

/// Brackets (`[`, `{`) opened minus closed in `s`, outside strings and comments.
fn nesting(s: &str) -> i32 {
    let (mut depth, mut quote, mut escaped) = (0, None, false);
    for c in s.chars() {
        match (quote, c) {
            (Some('"'), _) if escaped => escaped = false,
            (Some('"'), '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => break,
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            _ => {}
        }
    }
    depth
}

/// The 1-based line whose key (of a `[header]` or a `key = value`) has the most dots outside
/// quotes, if any line has one.
fn deepest_dotted_line(text: &str) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let mut dots = 0;
        let mut quote: Option<char> = None;
        for c in line.trim_start().trim_start_matches('[').chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '.') => dots += 1,
                (None, '=' | ']' | '#') => break,
                _ => {}
            }
        }
        if dots > 0 && best.map_or(true, |(_, d)| dots > d) {
            best = Some((i + 1, dots));
        }
    }
    best.map(|(line, _)| line)
}

/// The name in a `[table]` or `[[table]]` header line.
fn table_header(line: &str) -> Option<String> {
    let l = line.trim();
    let l = match l.find(" #").or_else(|| l.find("\t#")) {
        Some(i) if !l[..i].contains(['"', '\'']) => l[..i].trim_end(),
        _ => l,
    };
    let inner = l.strip_prefix("[[").and_then(|r| r.strip_suffix("]]"));
    let inner = inner.or_else(|| l.strip_prefix('[').and_then(|r| r.strip_suffix(']')))?;
    let ok = !inner.trim().is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-. \"'".contains(c));
    ok.then(|| inner.trim().to_string())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{assert_err, err, parse, MIN};
    use crate::config::Config;

    /// A new user's trial: `handover = "bind"` under `[sockets]` said only `invalid socket
    /// address "bind"`. A top-level key under a table gets the hint, whatever the table and
    /// whoever finds the error (validation, serde's unknown field or wrong type).
    #[test]
    fn a_top_level_key_under_a_table_is_hinted_above_the_first_table() {
        for (text, line, key) in [
            ("[sockets]\nhandover = \"bind\"\n", 3, "sockets.handover"),
            ("[readiness]\ninstances = 2\n", 3, "readiness.instances"),
            ("[env]\ninstances = 2\n", 3, "env.instances"),
            (
                "[drain]\ntimeout = \"1s\"\ncwd = \"/srv\"\n",
                4,
                "drain.cwd",
            ),
            (
                "[restart]\nrelease = \"/srv/current\"\n",
                3,
                "restart.release",
            ),
        ] {
            let e = assert_err(&format!("{MIN}{text}"), line, key);
            let name = key.split_once('.').unwrap().1;
            assert!(
                e.message.contains(&format!(
                    "`{name}` is a top-level key: put it above the first [table]"
                )),
                "{e}"
            );
        }
        // not for a key of the table's own
        let e = assert_err(
            &format!("{MIN}[readiness]\ntimeout = 5\n"),
            3,
            "readiness.timeout",
        );
        assert!(!e.message.contains("top-level"), "{e}");
        let e = assert_err(
            &format!("{MIN}[sockets]\nhttp = \"x\"\n"),
            3,
            "sockets.http",
        );
        assert!(!e.message.contains("top-level"), "{e}");
    }

    #[test]
    fn unknown_key_top_level() {
        let e = assert_err(
            &format!("{MIN}instances = 2\ncomand = [\"x\"]\n"),
            3,
            "comand",
        );
        assert!(e.message.contains("unknown field `comand`"), "{e}");
        assert_eq!(e.column, Some(1));
    }

    #[test]
    fn unknown_key_in_table() {
        let text = format!("{MIN}\n[readiness]\nkind = \"notify\"\ntimout = \"5s\"\n");
        let e = assert_err(&text, 5, "readiness.timout");
        assert!(e.message.contains("unknown field `timout`"), "{e}");
        assert!(e.message.contains("`timeout`"), "{e}");
        assert_eq!(
            e.to_string(),
            format!("test.toml:5:1: key `readiness.timout`: {}", e.message)
        );
        assert_err(
            &format!("{MIN}[drain]\nsignl = \"TERM\"\n"),
            3,
            "drain.signl",
        );
        assert_err(
            &format!("{MIN}[restart]\n\nmax = \"1s\"\n"),
            4,
            "restart.max",
        );
        assert_err(&format!("{MIN}[bogus]\nx = 1\n"), 2, "bogus");
        assert_err(
            &format!("{MIN}readiness = {{ kind = \"tcp\", nope = 1 }}\n"),
            2,
            "readiness.nope",
        );
    }

    #[test]
    fn type_errors_name_key() {
        let e = assert_err(&format!("{MIN}instances = \"2\"\n"), 2, "instances");
        assert!(e.message.contains("invalid type"), "{e}");
        assert_err(&format!("{MIN}[env]\nPORT = 8080\n"), 3, "env.PORT");
        assert_err(&format!("{MIN}[sockets]\nhttp = 8080\n"), 3, "sockets.http");
        assert_err(&format!("{MIN}readiness = 5\n"), 2, "readiness");
        assert_err("command = [\"a\", 1]\n", 1, "command");
        let e = assert_err("\n\ncommand = \"/bin/app --flag\"\n", 3, "command");
        assert!(e.message.contains("array"), "{e}");
    }

    #[test]
    fn syntax_errors_are_located() {
        let e = err(&format!("{MIN}[readiness]\ntimeout = \"5s\n"));
        assert_eq!(e.line, Some(3), "{e}");
        assert_eq!(e.key.as_deref(), Some("readiness.timeout"), "{e}");
        let e = err(&format!(
            "{MIN}[drain]\ntimeout = \"1s\"\ntimeout = \"2s\"\n"
        ));
        assert_eq!(e.line, Some(4), "{e}");
        assert_eq!(e.key.as_deref(), Some("drain.timeout"), "{e}");
        let e = err(&format!("{MIN}[drain\n"));
        assert_eq!(e.line, Some(2), "{e}");
        // a new user's trial: a missing `]` was blamed on the next key
        let e = err("command = [\"/bin/true\"\ninstances = 2\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert_eq!(e.key.as_deref(), Some("command"), "{e}");
        let e = err("[readiness]\nexec = [\"a\",\n  \"b]\", # ]\n  \"c\\\"]\"\nkind = \"exec\"\n");
        assert_eq!(e.key.as_deref(), Some("readiness.exec"), "{e}");
        let e = err("command = [\"/bin/true\"]\ninstances = \"two\nx = 1\n");
        assert_eq!(e.key.as_deref(), Some("instances"), "{e}");
    }

    #[test]
    fn error_is_std_error() {
        let e: Box<dyn std::error::Error + Send + Sync> = Box::new(err("instances = 1\n"));
        let a = anyhow::Error::from(err("instances = 1\n"));
        assert_eq!(e.to_string(), a.to_string());
    }

    /// Issue 13: invalid UTF-8 and over-deep dotted keys are located.
    #[test]
    fn invalid_utf8_and_deep_keys_are_located() {
        let e = Config::parse_bytes(b"command = [\"/bin/\xffapp\"]\n", "t.toml").unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        let deep = format!("{MIN}[{}]\nx = 1\n", vec!["a"; 300].join("."));
        let e = parse(&deep).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let deep = format!("{MIN}{} = 1\n", vec!["a"; 300].join("."));
        let e = parse(&deep).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }
}
