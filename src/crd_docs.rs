//! The CRD reference, `docs/crds.md`, generated from the CRDs that
//! `ferrolb crds` prints, so that it cannot drift from them.

use std::fmt::Write as _;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};

/// The whole reference, as Markdown.
pub fn markdown() -> String {
    let mut out = String::from(
        "# CRD reference\n\n\
         <!-- Generated from the Rust types by src/crd_docs.rs; do not edit. Regenerate with \
         `FERROLB_BLESS=1 cargo test -p ferrolb crd_docs`. -->\n\n\
         The CustomResourceDefinitions ferrolb defines, as `ferrolb crds` prints them and \
         as the chart installs them from `charts/ferrolb/crds/`.\n",
    );
    for crd in crate::crds::all() {
        crd_section(&mut out, &crd);
    }
    out
}

fn crd_section(out: &mut String, crd: &CustomResourceDefinition) {
    let spec = &crd.spec;
    let names = &spec.names;
    for version in &spec.versions {
        let _ = write!(
            out,
            "\n## {} ({}/{})\n\n",
            names.kind, spec.group, version.name
        );
        let short = names.short_names.as_deref().unwrap_or_default();
        let _ = writeln!(
            out,
            "{}-scoped; `kubectl get {}`{}.{}\n",
            spec.scope,
            names.plural,
            if short.is_empty() {
                String::new()
            } else {
                format!(" (or `{}`)", short.join("`, `"))
            },
            if version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some())
            {
                " Its status is a subresource, written by the controller."
            } else {
                ""
            }
        );
        let Some(root) = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        else {
            continue;
        };
        let props = root.properties.clone().unwrap_or_default();
        for part in ["spec", "status"] {
            let Some(schema) = props.get(part) else {
                continue;
            };
            let _ = writeln!(out, "### {part}\n");
            if let Some(d) = &schema.description {
                let _ = writeln!(out, "{}\n", d.trim());
            }
            out.push_str("| field | type | required | description |\n|---|---|---|---|\n");
            fields(out, part, schema);
            out.push('\n');
        }
        if let Some(columns) = &version.additional_printer_columns {
            out.push_str("### kubectl get columns\n\n| column | from |\n|---|---|\n");
            for c in columns {
                let _ = writeln!(out, "| {} | `{}` |", c.name, c.json_path);
            }
        }
    }
}

/// One row per field below `schema`, depth first, in the schema's order.
fn fields(out: &mut String, path: &str, schema: &JSONSchemaProps) {
    let required = schema.required.clone().unwrap_or_default();
    for (name, field) in schema.properties.iter().flatten() {
        let path = format!("{path}.{name}");
        let _ = writeln!(
            out,
            "| `{path}` | {} | {} | {} |",
            type_name(field),
            if required.contains(name) { "yes" } else { "" },
            cell(&describe(field)),
        );
        match element(field) {
            Some(item) if !is_label_selector(item) => fields(out, &format!("{path}[]"), item),
            Some(_) => {}
            None if !is_label_selector(field) => fields(out, &path, field),
            None => {}
        }
    }
}

/// The schema of an array's elements.
fn element(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match &schema.items {
        Some(JSONSchemaPropsOrArray::Schema(item)) => Some(item),
        _ => None,
    }
}

/// Kubernetes' own `LabelSelector`: named, not spelled out.
fn is_label_selector(schema: &JSONSchemaProps) -> bool {
    schema
        .properties
        .as_ref()
        .is_some_and(|p| p.contains_key("matchLabels") && p.contains_key("matchExpressions"))
}

fn type_name(schema: &JSONSchemaProps) -> String {
    if is_label_selector(schema) {
        return "LabelSelector".into();
    }
    if let Some(item) = element(schema) {
        return format!("[]{}", type_name(item));
    }
    if let Some(JSONSchemaPropsOrBool::Schema(value)) = &schema.additional_properties {
        return format!("map[string]{}", type_name(value));
    }
    let base = schema.type_.clone().unwrap_or_else(|| "any".into());
    match &schema.format {
        Some(f) => format!("{base} ({f})"),
        None => base,
    }
}

fn describe(schema: &JSONSchemaProps) -> String {
    let mut parts = Vec::new();
    if let Some(d) = &schema.description {
        parts.push(d.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    if let Some(d) = &schema.default {
        parts.push(format!("Default: `{}`.", d.0));
    }
    if let Some(n) = schema.min_items {
        parts.push(format!(
            "At least {n} item{}.",
            if n == 1 { "" } else { "s" }
        ));
    }
    parts.join(" ")
}

/// A table cell: no newlines, no unescaped pipes.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/crds.md is what the code generates.
    #[test]
    fn crd_docs_are_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/crds.md");
        let want = markdown();
        if std::env::var("FERROLB_BLESS").as_deref() == Ok("1") {
            std::fs::write(path, &want).expect("writing docs/crds.md");
            return;
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/crds.md is stale: regenerate it with \
             `FERROLB_BLESS=1 cargo test -p ferrolb crd_docs` and commit it"
        );
    }

    #[test]
    fn every_spec_and_status_field_has_a_row() {
        let md = markdown();
        for field in [
            "`spec.addresses`",
            "`spec.autoAssign`",
            "`spec.avoidBuggyIPs`",
            "`spec.serviceAllocation.priority`",
            "`spec.serviceAllocation.namespaces`",
            "`spec.serviceAllocation.serviceSelectors`",
            "`status.assignedIPv4`",
            "`status.availableIPv6`",
            "`status.errors`",
        ] {
            assert!(md.contains(field), "{field} missing from\n{md}");
        }
        assert!(md.contains("| []LabelSelector |"), "{md}");
        assert!(
            !md.contains("matchExpressions"),
            "selectors are named, not spelled out"
        );
    }
}
