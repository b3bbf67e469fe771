//! Reading typed fields out of a JSON object, refusing unknown ones, and
//! naming the full path of any field at fault (`policy.rules[2].verbs`).
//!
//! Written against `serde_json::Value` rather than derived deserialisers: the
//! derived code plus path tracking cost more of the .wasm size budget than the
//! whole rest of the filter.

use crate::prelude::*;
use crate::status::Quoted;
use core::fmt;
use serde_json::{Map, Value};

/// A configuration problem: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.problem)
    }
}

pub fn field_error(field: impl Into<String>, problem: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Parses JSON text, describing a syntax error without echoing the input.
pub fn parse_json(text: &[u8]) -> Result<Value, FieldError> {
    serde_json::from_slice(text).map_err(|e| {
        field_error(
            "(top level)",
            format!("not valid JSON (line {}, column {})", e.line(), e.column()),
        )
    })
}

/// The fields of one JSON object; [`Object::finish`] refuses any field that
/// was never asked for.
pub struct Object<'v> {
    map: &'v Map<String, Value>,
    path: String,
    known: Vec<&'static str>,
}

impl<'v> Object<'v> {
    pub fn new(value: &'v Value, path: &str) -> Result<Object<'v>, FieldError> {
        let map = value
            .as_object()
            .ok_or_else(|| field_error(display_path(path), "must be a JSON object"))?;
        Ok(Object {
            map,
            path: path.to_string(),
            known: Vec::new(),
        })
    }

    /// The path of one of this object's fields.
    pub fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&'v Value> {
        self.known.push(key);
        self.map.get(key).filter(|value| !value.is_null())
    }

    fn typed<T>(
        &mut self,
        key: &'static str,
        expected: &str,
        convert: impl FnOnce(&'v Value) -> Option<T>,
    ) -> Result<Option<T>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => convert(value)
                .map(Some)
                .ok_or_else(|| field_error(self.path_of(key), format!("must be {expected}"))),
        }
    }

    pub fn string(&mut self, key: &'static str) -> Result<Option<String>, FieldError> {
        self.typed(key, "a string", |v| v.as_str().map(str::to_owned))
    }

    pub fn boolean(&mut self, key: &'static str) -> Result<Option<bool>, FieldError> {
        self.typed(key, "true or false", Value::as_bool)
    }

    pub fn unsigned(&mut self, key: &'static str) -> Result<Option<u64>, FieldError> {
        self.typed(key, "a whole number of at least 0", Value::as_u64)
    }

    pub fn strings(&mut self, key: &'static str) -> Result<Option<Vec<String>>, FieldError> {
        self.typed(key, "a list of strings", |v| {
            v.as_array()?
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
    }

    /// An object whose values are all strings, as (key, value) in key order.
    pub fn string_map(
        &mut self,
        key: &'static str,
    ) -> Result<Option<Vec<(String, String)>>, FieldError> {
        self.typed(key, "an object of strings", |v| {
            v.as_object()?
                .iter()
                .map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
    }

    /// One of `choices`, by name.
    pub fn choice<T: Copy>(
        &mut self,
        key: &'static str,
        choices: &[(&str, T)],
    ) -> Result<Option<T>, FieldError> {
        let Some(name) = self.string(key)? else {
            return Ok(None);
        };
        match choices.iter().find(|(choice, _)| *choice == name) {
            Some((_, value)) => Ok(Some(*value)),
            None => {
                let names: Vec<&str> = choices.iter().map(|(choice, _)| *choice).collect();
                Err(field_error(
                    self.path_of(key),
                    format!(
                        "unknown value {}; expected one of {}",
                        Quoted(&name),
                        names.join(", ")
                    ),
                ))
            }
        }
    }

    pub fn object(&mut self, key: &'static str) -> Result<Option<Object<'v>>, FieldError> {
        let path = self.path_of(key);
        self.get(key)
            .map(|value| Object::new(value, &path))
            .transpose()
    }

    /// Each element of a list, with its path (`key[i]`).
    pub fn list(
        &mut self,
        key: &'static str,
    ) -> Result<Option<Vec<(String, &'v Value)>>, FieldError> {
        let path = self.path_of(key);
        self.typed(key, "a list", |v| {
            let items = v.as_array()?;
            Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(index, item)| (format!("{path}[{index}]"), item))
                    .collect(),
            )
        })
    }

    pub fn finish(self) -> Result<(), FieldError> {
        match self
            .map
            .keys()
            .find(|key| !self.known.contains(&key.as_str()))
        {
            None => Ok(()),
            Some(unknown) => Err(field_error(
                display_path(&self.path),
                format!(
                    "unknown field {}; known fields: {}",
                    Quoted(unknown),
                    self.known.join(", ")
                ),
            )),
        }
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "(top level)".into()
    } else {
        path.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_typed_fields_and_refuses_unknown_ones() {
        let value = json!({"n": 3, "s": "x", "b": true, "l": ["a"], "o": {"k": 1}, "null": null});
        let mut object = Object::new(&value, "").unwrap();
        assert_eq!(object.unsigned("n").unwrap(), Some(3));
        assert_eq!(object.string("s").unwrap().as_deref(), Some("x"));
        assert_eq!(object.boolean("b").unwrap(), Some(true));
        assert_eq!(object.strings("l").unwrap(), Some(vec!["a".to_string()]));
        assert_eq!(object.string("absent").unwrap(), None);
        assert_eq!(
            object.string("null").unwrap(),
            None,
            "null means the default"
        );
        let mut inner = object.object("o").unwrap().unwrap();
        assert_eq!(inner.path_of("k"), "o.k");
        assert_eq!(inner.unsigned("k").unwrap(), Some(1));
        inner.finish().unwrap();
        object.finish().unwrap();

        let mut object = Object::new(&value, "").unwrap();
        object.unsigned("n").unwrap();
        let error = object.finish().unwrap_err();
        assert_eq!(error.field, "(top level)");
        assert!(error.problem.starts_with("unknown field \"b\""), "{error}");
    }

    #[test]
    fn type_errors_name_the_path() {
        let value = json!({"outer": {"n": -1, "list": [{"x": "y"}, 5]}});
        let mut object = Object::new(&value, "").unwrap();
        let mut outer = object.object("outer").unwrap().unwrap();
        let error = outer.unsigned("n").unwrap_err();
        assert_eq!(
            (error.field.as_str(), error.problem.as_str()),
            ("outer.n", "must be a whole number of at least 0")
        );
        let items = outer.list("list").unwrap().unwrap();
        assert_eq!(items[1].0, "outer.list[1]");
        let error = Object::new(items[1].1, &items[1].0).err().unwrap();
        assert_eq!(
            error.to_string(),
            "field `outer.list[1]`: must be a JSON object"
        );
        let value = json!({"mode": "fast"});
        let mut object = Object::new(&value, "x").unwrap();
        let error = object
            .choice("mode", &[("slow", 1), ("steady", 2)])
            .unwrap_err();
        assert_eq!(error.field, "x.mode");
        assert_eq!(
            error.problem,
            "unknown value \"fast\"; expected one of slow, steady"
        );
    }

    #[test]
    fn syntax_errors_give_the_position_only() {
        let error = parse_json(b"{\"token\": secret-value").unwrap_err();
        assert_eq!(error.field, "(top level)");
        assert!(error.problem.contains("line 1"), "{error}");
        assert!(!error.problem.contains("secret"), "{error}");
    }
}
