//! The grammars of the resource API's query parameters and path segments, as regular
//! expressions. The OpenAPI document publishes each as a `pattern`, and the server checks a
//! value against the same expression before it parses it, so the document and the server
//! cannot disagree about which values are well formed (schemathesis checks both directions:
//! what matches is accepted, what does not is refused with 400).
//!
//! The expressions use only what ECMA-262, Python's `re` and the `regex` crate read alike:
//! classes, groups, alternation and counted repetition, anchored with `^` and `$`.

use std::sync::OnceLock;

use regex::Regex;

/// One grammar: its expression as published, compiled on first use.
#[derive(Debug)]
pub struct Grammar {
    pub pattern: &'static str,
    compiled: OnceLock<Regex>,
}

impl Grammar {
    const fn new(pattern: &'static str) -> Grammar {
        Grammar { pattern, compiled: OnceLock::new() }
    }

    /// Whether the whole of `text` is in the grammar.
    pub fn matches(&self, text: &str) -> bool {
        self.compiled.get_or_init(|| Regex::new(self.pattern).expect("the grammars are valid expressions")).is_match(text)
    }
}

/// The pieces the grammars are made of: a DNS label, a DNS subdomain (labels joined by dots),
/// a label key (`[subdomain/]name`), a label value, and a label selector's requirement.
macro_rules! dns_label {
    () => {
        "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
    };
}
macro_rules! dns_subdomain {
    () => {
        concat!(dns_label!(), "(\\.", dns_label!(), ")*")
    };
}
macro_rules! label_key {
    () => {
        concat!("(", dns_subdomain!(), "/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
    };
}
macro_rules! label_value {
    () => {
        "([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"
    };
}
macro_rules! label_selector_requirement {
    () => {
        concat!(
            "(!",
            label_key!(),
            "|",
            label_key!(),
            "( *(=|==|!=) *",
            label_value!(),
            "| +(in|notin) +\\( *",
            label_value!(),
            "( *, *",
            label_value!(),
            ")* *\\))?)"
        )
    };
}

/// A DNS subdomain (object names), as [`crate::validate::dns_subdomain`] checks it (which
/// also bounds the length to 253).
pub const NAME: &str = concat!("^", dns_subdomain!(), "$");
/// A DNS label (namespaces), as [`crate::validate::dns_label`] checks it (at most 63).
pub const NAMESPACE: &str = concat!("^", dns_label!(), "$");

/// A label selector, as Kubernetes writes them: comma-separated requirements `key`, `!key`,
/// `key=value`, `key==value`, `key!=value`, `key in (v1,v2)` and `key notin (v1,v2)`, with
/// spaces around the operators and commas. Keys and values have label syntax.
pub static LABEL_SELECTOR: Grammar =
    Grammar::new(concat!("^( *", label_selector_requirement!(), " *(, *", label_selector_requirement!(), " *)*)?$"));

/// The continue token of a list page: `namespace/name` of the last object shown (an empty
/// namespace for cluster-scoped kinds), or empty for the first page. Any such position is a
/// valid place to continue from: objects are listed in that order.
pub static CONTINUE: Grammar = Grammar::new(concat!("^((", dns_label!(), ")?/", dns_subdomain!(), ")?$"));

/// A field selector on `fields`: comma-separated `field=value`, `field==value` or
/// `field!=value`; a value holds no `,`, `=` or `!`.
pub fn field_selector(fields: &[&str]) -> String {
    let field = fields.iter().map(|f| f.replace('.', "\\.")).collect::<Vec<_>>().join("|");
    let requirement = format!(" *({field}) *(=|==|!=)[^,=!]*");
    format!("^({requirement}(,{requirement})*)?$")
}

/// Whether `text` is a field selector on `fields` ([`field_selector`]).
pub fn is_field_selector(text: &str, fields: &[&str]) -> bool {
    // Compiled per call: field selectors are rare and short, and the fields differ by route.
    Regex::new(&field_selector(fields)).is_ok_and(|r| r.is_match(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_in_and_out_of_the_grammar() {
        for good in [
            "",
            "app",
            "!app",
            "app=filter",
            "app == filter",
            "tier!=edge",
            "zone in (hall-1, hall-2)",
            "x notin ()",
            "edgeplane.io/line=a,zone",
        ] {
            assert!(LABEL_SELECTOR.matches(good), "{good:?} should be a label selector");
        }
        for bad in ["a=-", "=x", "a,,b", "a in(b)", "a=b=c", "Bad/x", "a=(b)", "app\n", "~\u{11}", &"k".repeat(64)] {
            assert!(!LABEL_SELECTOR.matches(bad), "{bad:?} should not be a label selector");
        }
    }

    #[test]
    fn field_selectors_name_only_the_given_fields() {
        let fields = ["metadata.name", "metadata.namespace"];
        for good in ["", "metadata.name=filter", "metadata.namespace!=a, metadata.name==b", "metadata.name="] {
            assert!(is_field_selector(good, &fields), "{good:?} should be a field selector");
        }
        for bad in ["metadata.uid=x", "metadata.name", "metadata.name=a=b", "metadataXname=a", ",metadata.name=a"] {
            assert!(!is_field_selector(bad, &fields), "{bad:?} should not be a field selector");
        }
    }

    #[test]
    fn continue_tokens_are_positions() {
        assert!(CONTINUE.matches("factory/filter"));
        assert!(CONTINUE.matches("/edge-1"));
        assert!(CONTINUE.matches(""));
        assert!(!CONTINUE.matches("factory"));
        assert!(!CONTINUE.matches("Factory/filter"));
        assert!(!CONTINUE.matches("factory/filter/x"));
    }
}
