//! Kubernetes label selectors (`labelSelector=` on lists and watches, `edgectl get -l`).

use serde_json::Value;

/// Kubernetes label selector syntax: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
/// `k notin (a,b)`, joined by commas (all must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        let mut parts = Vec::new();
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&text[start..]);
        for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            requirements.push(Self::requirement(part)?);
        }
        // What the parts above leave open (empty parts, values outside label syntax, spaces
        // around `in`): the published grammar decides.
        if !crate::grammar::LABEL_SELECTOR.matches(text) {
            return Err(format!(
                "{text:?} is not a label selector: comma-separated key, !key, key=value, key!=value, key in (a,b) or key notin (a,b), \
                 keys and values in label syntax"
            ));
        }
        Ok(LabelSelector(requirements))
    }

    /// Whether every object the selector matches has label `key` equal to `value` (it
    /// requires `key=value`, or `key in (value)`).
    pub fn pins(&self, key: &str, value: &str) -> bool {
        self.0.iter().any(|r| match r {
            Requirement::Equals(k, v) => k == key && v == value,
            Requirement::In(k, values) => k == key && values.len() == 1 && values[0] == value,
            _ => false,
        })
    }

    fn requirement(part: &str) -> Result<Requirement, String> {
        let key = |k: &str| -> Result<String, String> {
            let k = k.trim();
            crate::validate::label_key(k).map_err(|e| format!("in {part:?}: {e}"))?;
            Ok(k.to_owned())
        };
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let inner =
                rest.trim().strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or(format!("in {part:?}: expected (a,b,...)"))?;
            Ok(inner.split(',').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect())
        };
        if let Some(k) = part.strip_prefix('!') {
            return Ok(Requirement::NotExists(key(k)?));
        }
        if let Some((k, v)) = part.split_once("!=") {
            return Ok(Requirement::NotEquals(key(k)?, v.trim().to_owned()));
        }
        if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            return Ok(Requirement::Equals(key(k)?, v.trim().to_owned()));
        }
        if let Some((k, rest)) = part.split_once(" notin ") {
            return Ok(Requirement::NotIn(key(k)?, set(rest)?));
        }
        if let Some((k, rest)) = part.split_once(" in ") {
            return Ok(Requirement::In(key(k)?, set(rest)?));
        }
        Ok(Requirement::Exists(key(part)?))
    }

    /// Whether an object's `metadata.labels` (absent: no labels) satisfy every requirement.
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
        })
    }
}

/// A field selector: `FIELD=VALUE`, `FIELD==VALUE` or `FIELD!=VALUE`, comma-separated, on
/// the fields a resource selects on (for custom resources Kubernetes offers `metadata.name`
/// and `metadata.namespace`, [`OBJECT_FIELDS`]; Events offer more). `kubectl wait`,
/// `kubectl describe` and `--field-selector` send them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<FieldRequirement>);

/// The fields every object selects on.
pub const OBJECT_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    field: String,
    equal: bool,
    value: String,
}

impl FieldSelector {
    /// `text` selecting on `fields` only.
    pub fn parse(text: &str, fields: &[&str]) -> Result<FieldSelector, String> {
        let mut requirements = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("{part:?}: expected FIELD=VALUE, FIELD==VALUE or FIELD!=VALUE"));
            };
            let field = field.trim();
            if !fields.contains(&field) {
                return Err(format!("{field:?} is not a field this API selects on ({})", fields.join(", ")));
            }
            requirements.push(FieldRequirement { field: field.to_owned(), equal, value: value.trim().to_owned() });
        }
        if !crate::grammar::is_field_selector(text, fields) {
            return Err(format!("{text:?} is not a field selector: comma-separated FIELD=VALUE, FIELD==VALUE or FIELD!=VALUE, no empty parts, values without ',', '=' or '!'"));
        }
        Ok(FieldSelector(requirements))
    }

    /// Whether an object matches, given each field's value (empty when it has none).
    pub fn matches(&self, value_of: impl Fn(&str) -> String) -> bool {
        self.0.iter().all(|r| (value_of(&r.field) == r.value) == r.equal)
    }

    /// For [`OBJECT_FIELDS`]: whether the object `name` in `namespace` matches.
    pub fn matches_object(&self, namespace: &str, name: &str) -> bool {
        self.matches(|field| if field == "metadata.name" { name.to_owned() } else { namespace.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_follow_kubernetes_syntax() {
        let labels = json!({ "line": "a", "zone": "hall-1" });
        let cases = [
            ("line=a", true),
            ("line==a,zone=hall-1", true),
            ("line!=a", false),
            ("line", true),
            ("!line", false),
            ("!tier", true),
            ("zone in (hall-1, hall-2)", true),
            ("zone notin (hall-1)", false),
            ("line=b", false),
            ("", true),
        ];
        for (selector, expected) in cases {
            let parsed = LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector:?}: {e}"));
            assert_eq!(parsed.matches(Some(&labels)), expected, "{selector:?}");
        }
        assert!(LabelSelector::parse("bad key=1").is_err());
        assert!(LabelSelector::parse("zone in hall-1").is_err());
    }

    #[test]
    fn field_selectors_on_name_and_namespace() {
        let by_name = FieldSelector::parse("metadata.name=vib", OBJECT_FIELDS).expect("parses");
        assert!(by_name.matches_object("plant", "vib") && !by_name.matches_object("plant", "other"));
        let both = FieldSelector::parse("metadata.namespace==plant, metadata.name!=vib", OBJECT_FIELDS).expect("parses");
        assert!(both.matches_object("plant", "other") && !both.matches_object("plant", "vib") && !both.matches_object("mill", "other"));
        assert!(FieldSelector::parse("", OBJECT_FIELDS).expect("empty").matches_object("any", "thing"));
        for bad in ["spec.version=1", "metadata.name", "status.phase!=Running"] {
            assert!(FieldSelector::parse(bad, OBJECT_FIELDS).is_err(), "{bad}");
        }
        let events = FieldSelector::parse("involvedObject.kind=Workload,type!=Normal", &["involvedObject.kind", "type"]).expect("parses");
        assert!(events.matches(|f| if f == "type" { "Warning".into() } else { "Workload".into() }));
    }
}
