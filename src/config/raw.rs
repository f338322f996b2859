//! The file as serde reads it: private "raw" structs with unknown keys rejected, every
//! validated value kept with its byte span ([`toml::Spanned`]) so that errors can name its line.
//! An argv must be an array and a duration a string; both say so with a hint.
//!
//! Must never validate beyond the types: ranges, paths and the keys each readiness kind
//! accepts are checked in `validate.rs` and `readiness.rs`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawConfig {
    pub(super) command: Option<Spanned<RawArgv>>,
    pub(super) instances: Option<Spanned<i64>>,
    pub(super) control: Option<Spanned<String>>,
    pub(super) cwd: Option<Spanned<String>>,
    pub(super) release: Option<Spanned<String>>,
    pub(super) handover: Option<Spanned<String>>,
    pub(super) history: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub(super) sockets: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub(super) readiness: RawReadiness,
    #[serde(default)]
    pub(super) drain: RawDrain,
    #[serde(default)]
    pub(super) restart: RawRestart,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawReadiness {
    pub(super) kind: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<RawDuration>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) interval: Option<Spanned<RawDuration>>,
    pub(super) probe_timeout: Option<Spanned<RawDuration>>,
    pub(super) successes: Option<Spanned<i64>>,
    pub(super) exec: Option<Spanned<RawArgv>>,
    pub(super) delay: Option<Spanned<RawDuration>>,
    pub(super) stable: Option<Spanned<RawDuration>>,
    pub(super) startup_nice: Option<Spanned<i64>>,
    pub(super) max_starting: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawDrain {
    pub(super) signal: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<RawDuration>>,
    pub(super) nice: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawRestart {
    pub(super) backoff_initial: Option<Spanned<RawDuration>>,
    pub(super) backoff_max: Option<Spanned<RawDuration>>,
}

/// An argv array; a plain string is rejected with a hint.
pub(super) struct RawArgv(pub(super) Vec<Spanned<String>>);

impl<'de> Deserialize<'de> for RawArgv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawArgv;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of strings (argv)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawArgv, E> {
                Err(E::custom(format!(
                    "expected an array of strings, found the string {v:?}; \
                     write the argv as an array like [\"/usr/bin/app\", \"--flag\"] (no shell is used)"
                )))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawArgv, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<Spanned<String>>()? {
                    v.push(s);
                }
                Ok(RawArgv(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration as written: a string, or a number (rejected with a hint).
pub(super) enum RawDuration {
    Str(String),
    Int(i64),
    Float(f64),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string like \"30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Str(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
                Ok(RawDuration::Float(v))
            }
        }
        d.deserialize_any(V)
    }
}
