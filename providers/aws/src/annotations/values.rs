//! Reading one annotation value: lists, `key=value` maps, booleans, numbers and
//! fixed choices, each failing with the full key and what was expected.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use ferrolb_provider_api::ProviderError;

/// How a user names an annotation in an error.
pub(super) fn field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

pub(super) use ferrolb_provider_api::quote;

/// Looks annotations up and remembers which keys were asked for, so a test can
/// check that every key read is documented.
pub(super) struct Reader<'a> {
    map: &'a BTreeMap<String, String>,
    read: RefCell<BTreeSet<&'static str>>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(map: &'a BTreeMap<String, String>) -> Self {
        Self {
            map,
            read: RefCell::new(BTreeSet::new()),
        }
    }

    /// The trimmed value of `key`. Absent and blank values are both `None`:
    /// charts often render an unset option as an empty string.
    pub(super) fn get(&self, key: &'static str) -> Option<Value<'a>> {
        self.read.borrow_mut().insert(key);
        let text = self.map.get(key)?.trim();
        (!text.is_empty()).then_some(Value { key, text })
    }

    #[cfg(test)]
    pub(super) fn keys_read(&self) -> BTreeSet<&'static str> {
        self.read.borrow().clone()
    }
}

/// One non-blank, trimmed annotation value.
#[derive(Clone, Copy, Debug)]
pub(super) struct Value<'a> {
    pub key: &'static str,
    pub text: &'a str,
}

impl<'a> Value<'a> {
    pub(super) fn invalid(&self, reason: impl Into<String>) -> ProviderError {
        ProviderError::invalid(field(self.key), reason)
    }

    /// `reason` about the whole value, prefixed with the value itself.
    pub(super) fn bad(&self, expected: &str) -> ProviderError {
        self.invalid(format!("{} is not {expected}", quote(self.text)))
    }

    /// One of a fixed set of words, compared without regard to ASCII case.
    pub(super) fn choice<T: Copy>(&self, choices: &[(&str, T)]) -> Result<T, ProviderError> {
        choices
            .iter()
            .find(|(word, _)| word.eq_ignore_ascii_case(self.text))
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let words: Vec<&str> = choices.iter().map(|(w, _)| *w).collect();
                self.bad(&format!("allowed; use one of: {}", words.join(", ")))
            })
    }

    pub(super) fn boolean(&self) -> Result<bool, ProviderError> {
        self.choice(&[("true", true), ("false", false)])
    }

    /// A whole number in `range`.
    pub(super) fn number(&self, range: RangeInclusive<u32>) -> Result<u32, ProviderError> {
        number(self.text, &range).ok_or_else(|| {
            self.bad(&format!(
                "a whole number from {} to {}",
                range.start(),
                range.end()
            ))
        })
    }

    /// A comma-separated list. Items are trimmed, empty items (a trailing
    /// comma) are skipped, and an item given twice is an error.
    pub(super) fn list(&self) -> Result<Vec<&'a str>, ProviderError> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for item in self
            .text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            if !seen.insert(item) {
                return Err(self.invalid(format!("{} is listed twice", quote(item))));
            }
            out.push(item);
        }
        if out.is_empty() {
            return Err(self.invalid(format!(
                "{} lists nothing; give comma-separated items or remove the annotation",
                quote(self.text)
            )));
        }
        Ok(out)
    }

    /// A list whose every item must pass `valid`, which describes the item.
    pub(super) fn list_of(
        &self,
        valid: fn(&str) -> bool,
        what: &str,
    ) -> Result<Vec<String>, ProviderError> {
        self.list()?
            .into_iter()
            .map(|item| {
                if valid(item) {
                    Ok(item.to_string())
                } else {
                    Err(self.invalid(format!("item {} is not {what}", quote(item))))
                }
            })
            .collect()
    }

    /// `k=v,k2=v2`. Keys and values are trimmed; a value may contain `=`;
    /// an empty value is allowed only when `empty_values` is set; a key given
    /// twice is an error.
    pub(super) fn map(
        &self,
        empty_values: bool,
    ) -> Result<BTreeMap<String, String>, ProviderError> {
        let mut out = BTreeMap::new();
        for item in self
            .text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let Some((k, v)) = item.split_once('=') else {
                return Err(self.invalid(format!(
                    "item {} is not key=value; write k1=v1,k2=v2",
                    quote(item)
                )));
            };
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(self.invalid(format!("item {} has an empty key", quote(item))));
            }
            if v.is_empty() && !empty_values {
                return Err(self.invalid(format!("key {} has an empty value", quote(k))));
            }
            if out.insert(k.to_string(), v.to_string()).is_some() {
                return Err(self.invalid(format!("key {} is given twice", quote(k))));
            }
        }
        if out.is_empty() {
            return Err(self.invalid(format!(
                "{} holds no key=value pair; write k1=v1,k2=v2 or remove the annotation",
                quote(self.text)
            )));
        }
        Ok(out)
    }
}

pub(super) fn number(text: &str, range: &RangeInclusive<u32>) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().filter(|n| range.contains(n))
}

fn printable(s: &str) -> bool {
    s.chars().all(|c| !c.is_control())
}

/// A subnet or security-group ID, or the value of a `Name` tag.
pub(super) fn is_id_or_name(s: &str) -> bool {
    s.len() <= 255 && printable(s)
}

pub(super) fn is_eip_allocation(s: &str) -> bool {
    s.strip_prefix("eipalloc-").is_some_and(|hex| {
        (1..=32).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// `arn:partition:service:region:account:resource`.
pub(super) fn is_arn(s: &str) -> bool {
    s.starts_with("arn:")
        && s.len() <= 2048
        && !s.contains(char::is_whitespace)
        && s.splitn(6, ':').count() == 6
        && s.rsplit(':').next().is_some_and(|r| !r.is_empty())
}

/// ELB security policy names: letters, digits, `-`, `_` and `.`.
pub(super) fn is_policy_name(s: &str) -> bool {
    s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// ELBv2 attribute keys, e.g. `load_balancing.cross_zone.enabled`.
pub(super) fn is_attribute_key(s: &str) -> bool {
    s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_'))
}

/// A Kubernetes label key: an optional DNS-subdomain prefix and `/`, then a
/// name of at most 63 characters.
pub(super) fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    });
    prefix_ok && !name.is_empty() && is_label_value(name)
}

/// A Kubernetes label value: empty, or up to 63 letters, digits, `-`, `_`
/// and `.`, starting and ending with a letter or digit.
pub(super) fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}
