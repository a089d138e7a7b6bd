//! Label selectors, validated once and matched many times.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// A Kubernetes label selector: every `matchLabels` pair and every
/// `matchExpressions` requirement must hold. An empty selector matches every
/// set of labels, as in Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    labels: BTreeMap<String, String>,
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Selector {
    /// Checks the selector the way the apiserver does for a Deployment's
    /// selector: a known operator, values for `In`/`NotIn` and none for
    /// `Exists`/`DoesNotExist`, no empty key.
    pub fn from_label_selector(s: &LabelSelector) -> Result<Selector, String> {
        let labels = s.match_labels.clone().unwrap_or_default();
        if labels.keys().any(String::is_empty) {
            return Err("matchLabels: a label key is empty".into());
        }
        let mut requirements = Vec::new();
        for (i, r) in s.match_expressions.iter().flatten().enumerate() {
            let at = format!("matchExpressions[{i}]");
            if r.key.is_empty() {
                return Err(format!("{at}: key is empty"));
            }
            let values: BTreeSet<String> = r.values.iter().flatten().cloned().collect();
            let requirement = match r.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "{at}: operator {} needs at least one value",
                        r.operator
                    ));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!("{at}: operator {} takes no values", r.operator));
                }
                "In" => Requirement::In(r.key.clone(), values),
                "NotIn" => Requirement::NotIn(r.key.clone(), values),
                "Exists" => Requirement::Exists(r.key.clone()),
                "DoesNotExist" => Requirement::DoesNotExist(r.key.clone()),
                other => {
                    return Err(format!(
                        "{at}: operator {other:?} is not one of In, NotIn, Exists, DoesNotExist"
                    ));
                }
            };
            requirements.push(requirement);
        }
        Ok(Selector {
            labels,
            requirements,
        })
    }

    /// Whether a Service with these labels is selected. `NotIn` also matches
    /// when the label is absent, as in Kubernetes.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| match r {
                Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
                Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
                Requirement::Exists(k) => labels.contains_key(k),
                Requirement::DoesNotExist(k) => !labels.contains_key(k),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn selector(match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> Selector {
        Selector::from_label_selector(&LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        })
        .unwrap()
    }

    #[test]
    fn matches_like_kubernetes() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let db = labels(&[("app", "db")]);
        let none = labels(&[]);
        let cases: Vec<(&str, Selector, [bool; 3])> = vec![
            (
                "empty selects all",
                selector(&[], vec![]),
                [true, true, true],
            ),
            (
                "matchLabels",
                selector(&[("app", "web")], vec![]),
                [true, false, false],
            ),
            (
                "two matchLabels",
                selector(&[("app", "web"), ("tier", "back")], vec![]),
                [false, false, false],
            ),
            (
                "In",
                selector(&[], vec![expr("app", "In", &["web", "db"])]),
                [true, true, false],
            ),
            (
                "NotIn matches absent",
                selector(&[], vec![expr("app", "NotIn", &["web"])]),
                [false, true, true],
            ),
            (
                "Exists",
                selector(&[], vec![expr("tier", "Exists", &[])]),
                [true, false, false],
            ),
            (
                "DoesNotExist",
                selector(&[], vec![expr("tier", "DoesNotExist", &[])]),
                [false, true, true],
            ),
            (
                "labels and expressions together",
                selector(&[("app", "db")], vec![expr("tier", "DoesNotExist", &[])]),
                [false, true, false],
            ),
        ];
        for (name, sel, want) in cases {
            let got = [sel.matches(&web), sel.matches(&db), sel.matches(&none)];
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn rejects_malformed_selectors() {
        let cases: Vec<(LabelSelector, &str)> = vec![
            (
                LabelSelector {
                    match_expressions: Some(vec![expr("a", "Equals", &["x"])]),
                    ..Default::default()
                },
                "matchExpressions[0]: operator \"Equals\" is not one of In, NotIn, Exists, DoesNotExist",
            ),
            (
                LabelSelector {
                    match_expressions: Some(vec![expr("a", "Exists", &[]), expr("b", "In", &[])]),
                    ..Default::default()
                },
                "matchExpressions[1]: operator In needs at least one value",
            ),
            (
                LabelSelector {
                    match_expressions: Some(vec![expr("a", "DoesNotExist", &["x"])]),
                    ..Default::default()
                },
                "matchExpressions[0]: operator DoesNotExist takes no values",
            ),
            (
                LabelSelector {
                    match_expressions: Some(vec![expr("", "Exists", &[])]),
                    ..Default::default()
                },
                "matchExpressions[0]: key is empty",
            ),
            (
                LabelSelector {
                    match_labels: Some(labels(&[("", "x")])),
                    ..Default::default()
                },
                "matchLabels: a label key is empty",
            ),
        ];
        for (sel, want) in cases {
            assert_eq!(Selector::from_label_selector(&sel).unwrap_err(), want);
        }
    }
}
