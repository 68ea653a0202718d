//! The configuration document a host passes to `ep_configure` (docs/abi.md):
//!
//! ```json
//! {
//!   "config": { "min": 10, "max": 80 },
//!   "model": {
//!     "name": "press-anomaly", "version": "1.0.0", "format": "zscore-logistic/v1",
//!     "parameters": { "mean": [20.0, 0.5], "bias": -4.0 }
//!   }
//! }
//! ```
//!
//! `config` is the Workload's `spec.config`; `model` the parameters of the Workload's `Model`.
//! Either may be absent or `null`: no config is an empty object, no model is `None`. Other
//! top-level members are ignored, so that hosts can add some without breaking old modules.
//!
//! Within `config` a `null` member counts as absent. Accessor errors name the field, e.g.
//! `config.min: expected a number, got a string`, so that a workload can return them as they are.

use std::collections::BTreeMap;

use crate::json::{self, Value};

/// The parsed configuration document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    config: BTreeMap<String, Value>,
    model: Option<Model>,
}

impl Config {
    /// Parses and checks a configuration document.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value = json::parse(text).map_err(|e| format!("configuration document: {e}"))?;
        Self::from_value(value)
    }

    /// Like [`Config::parse`], from bytes that must be UTF-8.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, String> {
        let value = json::parse_bytes(bytes).map_err(|e| format!("configuration document: {e}"))?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Self, String> {
        let mut document = match value {
            Value::Object(members) => members,
            other => return Err(format!("configuration document: expected an object, got {}", other.kind())),
        };
        let config = match document.remove("config") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(members)) => members,
            Some(other) => return Err(format!("config: expected an object, got {}", other.kind())),
        };
        let model = match document.remove("model") {
            None | Some(Value::Null) => None,
            Some(value) => Some(Model::from_value(value)?),
        };
        Ok(Self { config, model })
    }

    /// The member `key` of `config`; `None` if it is absent or `null`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.config.get(key).filter(|v| !v.is_null())
    }

    /// The names of all members of `config`.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.config.keys().map(String::as_str)
    }

    /// Refuses members of `config` that are not in `known`: a misspelt key would otherwise be
    /// ignored and its default used without anyone noticing.
    pub fn deny_unknown(&self, known: &[&str]) -> Result<(), String> {
        match self.config.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(key) if known.is_empty() => Err(format!("config.{key}: unknown key (this workload takes no configuration)")),
            Some(key) => Err(format!("config.{key}: unknown key (known keys: {})", known.join(", "))),
        }
    }

    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>, String> {
        self.typed(key, "a number", Value::as_f64)
    }

    /// A required number.
    pub fn f64(&self, key: &str) -> Result<f64, String> {
        self.f64_opt(key)?.ok_or_else(|| required(key))
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64, String> {
        Ok(self.f64_opt(key)?.unwrap_or(default))
    }

    pub fn str_opt(&self, key: &str) -> Result<Option<&str>, String> {
        self.typed(key, "a string", Value::as_str)
    }

    /// A required string.
    pub fn str(&self, key: &str) -> Result<&str, String> {
        self.str_opt(key)?.ok_or_else(|| required(key))
    }

    pub fn str_or<'a>(&'a self, key: &str, default: &'a str) -> Result<&'a str, String> {
        Ok(self.str_opt(key)?.unwrap_or(default))
    }

    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>, String> {
        self.typed(key, "a boolean", Value::as_bool)
    }

    /// A required boolean.
    pub fn bool(&self, key: &str) -> Result<bool, String> {
        self.bool_opt(key)?.ok_or_else(|| required(key))
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, String> {
        Ok(self.bool_opt(key)?.unwrap_or(default))
    }

    /// The Workload's model, if it has one.
    pub fn model(&self) -> Option<&Model> {
        self.model.as_ref()
    }

    fn typed<'a, T>(&'a self, key: &str, expected: &str, cast: fn(&'a Value) -> Option<T>) -> Result<Option<T>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => match cast(value) {
                Some(v) => Ok(Some(v)),
                None => Err(format!("config.{key}: expected {expected}, got {}", value.kind())),
            },
        }
    }
}

fn required(key: &str) -> String {
    format!("config.{key}: required")
}

/// A `Model`'s parameters, as the host passes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    name: String,
    version: String,
    format: String,
    parameters: BTreeMap<String, Param>,
    artifact: Option<Value>,
}

/// One model parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// A number (as a one-element slice) or an array of numbers: what numeric formats need,
    /// converted once at configuration time.
    Numbers(Vec<f64>),
    /// Anything else, as parsed.
    Json(Value),
}

impl Model {
    fn from_value(value: Value) -> Result<Self, String> {
        let mut members = match value {
            Value::Object(members) => members,
            other => return Err(format!("model: expected an object, got {}", other.kind())),
        };
        let mut string = |key: &str, required: bool| match members.remove(key) {
            None | Some(Value::Null) if !required => Ok(String::new()),
            None | Some(Value::Null) => Err(format!("model.{key}: required")),
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(format!("model.{key}: expected a string, got {}", other.kind())),
        };
        let name = string("name", false)?;
        let version = string("version", false)?;
        let format = string("format", true)?;
        let parameters = match members.remove("parameters") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(params)) => params.into_iter().map(|(k, v)| (k, Param::from_value(v))).collect(),
            Some(other) => return Err(format!("model.parameters: expected an object, got {}", other.kind())),
        };
        let artifact = members.remove("artifact").filter(|a| !a.is_null());
        Ok(Self { name, version, format, parameters, artifact })
    }

    /// The model's name ("" if the host gave none).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model's version ("" if the host gave none).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// What the parameters mean, e.g. `zscore-logistic/v1`.
    pub fn format(&self) -> &str {
        &self.format
    }

    /// For an `onnx` Model: its file as the registry described it (`digest`, `inputs`,
    /// `outputs`, each with `name`, `elemType` and `shape`).
    pub fn artifact(&self) -> Option<&Value> {
        self.artifact.as_ref()
    }

    pub fn parameter(&self, name: &str) -> Option<&Param> {
        self.parameters.get(name)
    }

    /// The parameter `name` if it is a number or an array of numbers.
    pub fn param(&self, name: &str) -> Option<&[f64]> {
        match self.parameters.get(name)? {
            Param::Numbers(numbers) => Some(numbers),
            Param::Json(_) => None,
        }
    }

    /// The parameter `name` as exactly `len` numbers (a plain number counts as one), with an
    /// error naming the parameter otherwise.
    pub fn param_array(&self, name: &str, len: usize) -> Result<&[f64], String> {
        match self.parameters.get(name) {
            None => Err(format!("model.parameters.{name}: required")),
            Some(Param::Json(value)) => Err(format!(
                "model.parameters.{name}: expected {}, got {}",
                if len == 1 { "a number" } else { "an array of numbers" },
                value.kind()
            )),
            Some(Param::Numbers(numbers)) if numbers.len() != len => {
                Err(format!("model.parameters.{name}: expected {len} number{}, got {}", if len == 1 { "" } else { "s" }, numbers.len()))
            }
            Some(Param::Numbers(numbers)) => Ok(numbers),
        }
    }

    /// Names of all parameters.
    pub fn parameter_names(&self) -> impl Iterator<Item = &str> {
        self.parameters.keys().map(String::as_str)
    }
}

impl Param {
    fn from_value(value: Value) -> Self {
        match value {
            Value::Number(n) => Self::Numbers(vec![n]),
            Value::Array(items) if items.iter().all(|v| v.as_f64().is_some()) => {
                Self::Numbers(items.iter().filter_map(Value::as_f64).collect())
            }
            other => Self::Json(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
        "config": {"min": 1.5, "name": "x", "on": true, "nothing": null},
        "model": {"name": "m", "version": "1.0.0", "format": "zscore-logistic/v1",
                  "parameters": {"mean": [1, 2], "bias": -4, "empty": [], "table": {"a": 1}, "mixed": [1, "x"]}},
        "future": 1
    }"#;

    #[test]
    fn typed_accessors() {
        let c = Config::parse(FULL).unwrap();
        assert_eq!(c.f64("min"), Ok(1.5));
        assert_eq!(c.f64_or("min", 0.0), Ok(1.5));
        assert_eq!(c.f64_or("absent", 0.2), Ok(0.2));
        assert_eq!(c.f64_or("nothing", 0.2), Ok(0.2));
        assert_eq!(c.f64_opt("absent"), Ok(None));
        assert_eq!(c.str("name"), Ok("x"));
        assert_eq!(c.str_or("absent", "d"), Ok("d"));
        assert_eq!(c.bool("on"), Ok(true));
        assert_eq!(c.bool_or("absent", false), Ok(false));
        assert_eq!(c.keys().collect::<Vec<_>>(), ["min", "name", "nothing", "on"]);
    }

    #[test]
    fn errors_name_the_field() {
        let c = Config::parse(FULL).unwrap();
        assert_eq!(c.f64("name").unwrap_err(), "config.name: expected a number, got a string");
        assert_eq!(c.f64_or("on", 1.0).unwrap_err(), "config.on: expected a number, got a boolean");
        assert_eq!(c.str("min").unwrap_err(), "config.min: expected a string, got a number");
        assert_eq!(c.bool_or("name", true).unwrap_err(), "config.name: expected a boolean, got a string");
        assert_eq!(c.f64("absent").unwrap_err(), "config.absent: required");
        assert_eq!(c.f64("nothing").unwrap_err(), "config.nothing: required");
        assert_eq!(c.deny_unknown(&["min", "name"]).unwrap_err(), "config.nothing: unknown key (known keys: min, name)");
        assert_eq!(c.deny_unknown(&["min", "name", "nothing", "on"]), Ok(()));
        assert_eq!(c.deny_unknown(&[]).unwrap_err(), "config.min: unknown key (this workload takes no configuration)");
    }

    #[test]
    fn model_parameters() {
        let c = Config::parse(FULL).unwrap();
        let m = c.model().unwrap();
        assert_eq!((m.name(), m.version(), m.format()), ("m", "1.0.0", "zscore-logistic/v1"));
        assert_eq!(m.param("mean"), Some(&[1.0, 2.0][..]));
        assert_eq!(m.param("bias"), Some(&[-4.0][..]));
        assert_eq!(m.param("empty"), Some(&[][..]));
        assert_eq!(m.param("table"), None);
        assert!(matches!(m.parameter("table"), Some(Param::Json(_))));
        assert_eq!(m.param_array("mean", 2), Ok(&[1.0, 2.0][..]));
        assert_eq!(m.param_array("bias", 1), Ok(&[-4.0][..]));
        assert_eq!(m.param_array("mean", 3).unwrap_err(), "model.parameters.mean: expected 3 numbers, got 2");
        assert_eq!(m.param_array("mean", 1).unwrap_err(), "model.parameters.mean: expected 1 number, got 2");
        assert_eq!(m.param_array("absent", 2).unwrap_err(), "model.parameters.absent: required");
        assert_eq!(m.param_array("mixed", 2).unwrap_err(), "model.parameters.mixed: expected an array of numbers, got an array");
        assert_eq!(m.parameter_names().count(), 5);
    }

    #[test]
    fn absent_parts() {
        for doc in ["{}", r#"{"config": null, "model": null}"#, r#"{"config": {}}"#] {
            let c = Config::parse(doc).unwrap();
            assert_eq!(c, Config::default(), "{doc}");
        }
        let c = Config::parse(r#"{"model": {"format": "f"}}"#).unwrap();
        let m = c.model().unwrap();
        assert_eq!((m.name(), m.version(), m.format()), ("", "", "f"));
        assert_eq!(m.parameter_names().count(), 0);
    }

    #[test]
    fn refuses_malformed_documents() {
        let cases = [
            ("[]", "configuration document: expected an object, got an array"),
            (r#"{"config": 1}"#, "config: expected an object, got a number"),
            (r#"{"model": "m"}"#, "model: expected an object, got a string"),
            (r#"{"model": {}}"#, "model.format: required"),
            (r#"{"model": {"format": 1}}"#, "model.format: expected a string, got a number"),
            (r#"{"model": {"format": "f", "version": 1}}"#, "model.version: expected a string, got a number"),
            (r#"{"model": {"format": "f", "parameters": []}}"#, "model.parameters: expected an object, got an array"),
            ("{", "configuration document: invalid JSON at byte 1: expected a string as object key"),
        ];
        for (doc, message) in cases {
            assert_eq!(Config::parse(doc).unwrap_err(), message, "{doc}");
        }
        assert_eq!(Config::parse_bytes(b"{\xff}").unwrap_err(), "configuration document: invalid JSON at byte 1: not UTF-8");
    }
}
