//! A parsed JSON or UBJSON document as the tree readers walk it, with arrays
//! of numbers stored flat (8 bytes a number) instead of as a tree of generic
//! values (32 bytes each, plus their vectors' slack). An XGBoost model's
//! node arrays are nearly all of its file, so a load peaks near four times
//! the file (file, document and forest in turn) rather than the ten and more
//! a generic JSON value tree took (an 87 MiB model peaked at 930 MiB):
//! `--max-model-bytes` then bounds the memory a load needs, not only the file.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// One value of a document.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    /// An array holding only numbers.
    Numbers(Vec<f64>),
    /// Any other array.
    Array(Vec<Document>),
    /// An object's members in file order (a repeated key: the last counts).
    Object(Vec<(String, Document)>),
}

/// An array's elements, however it is stored.
#[derive(Clone, Copy)]
pub enum List<'a> {
    Numbers(&'a [f64]),
    Items(&'a [Document]),
}

impl<'a> List<'a> {
    pub fn len(&self) -> usize {
        match self {
            List::Numbers(numbers) => numbers.len(),
            List::Items(items) => items.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element at `index` as a number (see `Document::number`).
    pub fn number(&self, index: usize) -> Option<f64> {
        match self {
            List::Numbers(numbers) => numbers.get(index).copied(),
            List::Items(items) => items.get(index).and_then(Document::number),
        }
    }

    /// The element at `index` when it is not a plain number (an object, say).
    pub fn item(&self, index: usize) -> Option<&'a Document> {
        match self {
            List::Numbers(_) => None,
            List::Items(items) => items.get(index),
        }
    }
}

impl Document {
    /// An object's member `name`.
    pub fn get(&self, name: &str) -> Option<&Document> {
        match self {
            Document::Object(members) => members.iter().rev().find(|(key, _)| key == name).map(|(_, value)| value),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Document::String(text) => Some(text),
            _ => None,
        }
    }

    /// A number, a number written as a string (XGBoost writes parameters as
    /// strings), or a boolean as 0 or 1.
    pub fn number(&self) -> Option<f64> {
        match self {
            Document::Number(number) => Some(*number),
            Document::String(text) => text.parse().ok(),
            Document::Bool(flag) => Some(f64::from(u8::from(*flag))),
            _ => None,
        }
    }

    /// An array's elements.
    pub fn list(&self) -> Option<List<'_>> {
        match self {
            Document::Numbers(numbers) => Some(List::Numbers(numbers)),
            Document::Array(items) => Some(List::Items(items)),
            _ => None,
        }
    }
}

impl fmt::Display for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Document::Null => write!(f, "null"),
            Document::Bool(flag) => write!(f, "{flag}"),
            Document::Number(number) => write!(f, "{number}"),
            Document::String(text) => write!(f, "{text:?}"),
            Document::Numbers(numbers) => write!(f, "an array of {} numbers", numbers.len()),
            Document::Array(items) => write!(f, "an array of {} values", items.len()),
            Document::Object(members) => write!(f, "an object of {} members", members.len()),
        }
    }
}

/// Gathers an array's elements: flat while they are all numbers.
#[derive(Default)]
pub(super) struct ArrayBuilder {
    numbers: Vec<f64>,
    items: Option<Vec<Document>>,
}

impl ArrayBuilder {
    /// Room for `count` elements (a count the input declared, checked against its size).
    pub(super) fn with_capacity(count: usize) -> ArrayBuilder {
        ArrayBuilder { numbers: Vec::with_capacity(count), items: None }
    }

    pub(super) fn push(&mut self, element: Document) {
        if let Some(items) = &mut self.items {
            items.push(element);
            return;
        }
        match element {
            Document::Number(number) => self.numbers.push(number),
            other => {
                let numbers = std::mem::take(&mut self.numbers);
                let mut items: Vec<Document> = numbers.into_iter().map(Document::Number).collect();
                items.push(other);
                self.items = Some(items);
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.items.as_ref().map_or(self.numbers.len(), Vec::len)
    }

    pub(super) fn finish(self) -> Document {
        match self.items {
            Some(items) => Document::Array(items),
            None => {
                let mut numbers = self.numbers;
                numbers.shrink_to_fit();
                Document::Numbers(numbers)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Document, D::Error> {
        deserializer.deserialize_any(DocumentVisitor)
    }
}

struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Document, E> {
        Ok(Document::Null)
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Document, E> {
        Ok(Document::Bool(flag))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Document, E> {
        Ok(Document::Number(number as f64))
    }

    fn visit_u64<E>(self, number: u64) -> Result<Document, E> {
        Ok(Document::Number(number as f64))
    }

    fn visit_f64<E>(self, number: f64) -> Result<Document, E> {
        Ok(Document::Number(number))
    }

    fn visit_str<E>(self, text: &str) -> Result<Document, E> {
        Ok(Document::String(text.to_string()))
    }

    fn visit_string<E>(self, text: String) -> Result<Document, E> {
        Ok(Document::String(text))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Document, A::Error> {
        let mut array = ArrayBuilder::default();
        while let Some(element) = seq.next_element()? {
            array.push(element);
        }
        Ok(array.finish())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut members = Vec::new();
        while let Some((key, value)) = map.next_entry()? {
            members.push((key, value));
        }
        Ok(Document::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_arrays_are_flat_and_mixed_ones_are_not() {
        let document: Document =
            serde_json::from_str(r#"{"a": [1, 2.5, -3], "b": [1, "x"], "c": "7", "a2": [], "a": [4]}"#).unwrap();
        assert_eq!(document.get("a"), Some(&Document::Numbers(vec![4.0])), "a repeated key: the last counts");
        let mixed = document.get("b").unwrap().list().unwrap();
        assert_eq!((mixed.len(), mixed.number(0), mixed.number(1)), (2, Some(1.0), None));
        assert_eq!(document.get("c").unwrap().number(), Some(7.0));
        assert_eq!(document.get("a2"), Some(&Document::Numbers(vec![])));
        assert!(document.get("missing").is_none());
    }
}
