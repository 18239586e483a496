//! A TOML document as a tree that keeps the byte span of every key and value.
//!
//! Owns: turning TOML text into [`Node`]s. Must not: know anything about the
//! vipgate schema (that is `schema.rs`).
//!
//! Why not `toml::Spanned<T>` on typed structs: with toml 0.8 a serde derive
//! stops at the first error, and `Spanned<T>` fails on implicit tables (a
//! `[dataplane.timeouts]` header without `[dataplane]` has no span) and on
//! date-time keys. So this module speaks the span protocol that toml 0.8 uses
//! for `Spanned` itself (the `$__serde_spanned_private_*` names below) and
//! falls back to a span-less node where toml has no span. The unit tests at the
//! bottom fail if a toml upgrade changes that protocol. With toml 0.9 this file
//! can become a walk over `toml::de::DeTable`.

use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Byte range into the source text.
pub(crate) type Span = Range<usize>;

const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: [&str; 3] = [SPANNED_START, SPANNED_END, SPANNED_VALUE];
const DATETIME_FIELD: &str = "$__toml_private_datetime";

/// One TOML value with the span toml reported for it, if any.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub span: Option<Span>,
    pub value: Value,
}

/// The TOML value kinds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Table),
}

/// A TOML table in document order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Table {
    pub entries: Vec<Entry>,
}

/// One `key = value` of a table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_span: Option<Span>,
    pub node: Node,
}

/// A TOML syntax error: toml's message and where it points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub message: String,
    pub span: Option<Span>,
}

/// Parses `source` into a tree; the root is always a table.
pub(crate) fn parse(source: &str) -> Result<Node, SyntaxError> {
    toml::from_str::<Node>(source).map_err(|e| SyntaxError {
        message: e.message().trim().to_string(),
        span: e.span(),
    })
}

impl Value {
    /// The kind of value in the words of the TOML spec, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date-time",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

impl Table {
    pub(crate) fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, &SPANNED_FIELDS, NodeVisitor)
    }
}

/// Deserializes a value without asking for its span (the inner value of the
/// span protocol; asking again would recurse).
struct Unspanned;

impl<'de> DeserializeSeed<'de> for Unspanned {
    type Value = Node;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

fn bare(value: Value) -> Node {
    Node { span: None, value }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any TOML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(bare(Value::Boolean(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(bare(Value::Integer(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        i64::try_from(v)
            .map(|v| bare(Value::Integer(v)))
            .map_err(|_| E::custom("integer does not fit in 64 bits"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(bare(Value::Float(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(bare(Value::String(v.to_string())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(bare(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let Some(first) = map.next_key::<Key>()? else {
            return Ok(bare(Value::Table(Table::default())));
        };
        match first.name.as_str() {
            SPANNED_START => spanned_rest(map),
            DATETIME_FIELD => Ok(bare(Value::Datetime(map.next_value::<String>()?))),
            _ => table_rest(first, map),
        }
    }
}

/// The span protocol after its start key: start, end, then the value.
fn spanned_rest<'de, A: MapAccess<'de>>(mut map: A) -> Result<Node, A::Error> {
    let start: usize = map.next_value()?;
    expect_key(&mut map, SPANNED_END)?;
    let end: usize = map.next_value()?;
    expect_key(&mut map, SPANNED_VALUE)?;
    let mut node = map.next_value_seed(Unspanned)?;
    node.span = Some(start..end);
    Ok(node)
}

fn expect_key<'de, A: MapAccess<'de>>(map: &mut A, want: &str) -> Result<(), A::Error> {
    match map.next_key::<Key>()? {
        Some(key) if key.name == want => Ok(()),
        _ => Err(de::Error::custom(format_args!(
            "toml span protocol changed: expected {want}"
        ))),
    }
}

/// A plain table, its first key already read.
fn table_rest<'de, A: MapAccess<'de>>(first: Key, mut map: A) -> Result<Node, A::Error> {
    let mut entries = Vec::new();
    let mut key = Some(first);
    while let Some(k) = key {
        let node: Node = map.next_value()?;
        entries.push(Entry {
            key: k.name,
            key_span: k.span,
            node,
        });
        key = map.next_key::<Key>()?;
    }
    Ok(bare(Value::Table(Table { entries })))
}

/// A table key with its span when toml has one.
struct Key {
    name: String,
    span: Option<Span>,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, &SPANNED_FIELDS, KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key {
            name: v.to_string(),
            span: None,
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        expect_key(&mut map, SPANNED_START)?;
        let start: usize = map.next_value()?;
        expect_key(&mut map, SPANNED_END)?;
        let end: usize = map.next_value()?;
        expect_key(&mut map, SPANNED_VALUE)?;
        let name: String = map.next_value()?;
        Ok(Key {
            name,
            span: Some(start..end),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(node: &Node) -> &Table {
        match &node.value {
            Value::Table(t) => t,
            other => panic!("not a table: {other:?}"),
        }
    }

    fn text<'s>(source: &'s str, span: &Option<Span>) -> &'s str {
        let span = span.clone().expect("span present");
        &source[span]
    }

    #[test]
    fn keys_and_values_carry_spans() {
        let src = "[node]\nname = \"gw-a\"\nport = 80\n";
        let root = parse(src).unwrap();
        let node = table(&root).get("node").unwrap();
        assert_eq!(text(src, &node.key_span), "node");
        let name = table(&node.node).get("name").unwrap();
        assert_eq!(text(src, &name.key_span), "name");
        assert_eq!(text(src, &name.node.span), "\"gw-a\"");
        assert_eq!(name.node.value, Value::String("gw-a".into()));
        let port = table(&node.node).get("port").unwrap();
        assert_eq!(text(src, &port.node.span), "80");
    }

    #[test]
    fn array_of_tables_elements_have_header_spans() {
        let src = "[[service]]\nname = \"a\"\n\n[[service]]\nname = \"b\"\n";
        let root = parse(src).unwrap();
        let services = &table(&root).get("service").unwrap().node;
        let Value::Array(items) = &services.value else {
            panic!("not an array")
        };
        assert_eq!(items.len(), 2);
        let second = items[1].span.clone().unwrap();
        assert!(src[second].starts_with("[[service]]\nname = \"b\""));
    }

    #[test]
    fn implicit_tables_and_datetimes_parse() {
        let src = "[dataplane.timeouts]\nudp = \"5s\"\n[x]\nwhen = 1979-05-27T07:32:00Z\n";
        let root = parse(src).unwrap();
        let dp = table(&root).get("dataplane").unwrap();
        let timeouts = table(&dp.node).get("timeouts").unwrap();
        let udp = table(&timeouts.node).get("udp").unwrap();
        assert_eq!(text(src, &udp.node.span), "\"5s\"");
        let x = table(&root).get("x").unwrap();
        let when = table(&x.node).get("when").unwrap();
        assert_eq!(
            when.node.value,
            Value::Datetime("1979-05-27T07:32:00Z".into())
        );
        assert_eq!(text(src, &when.node.span), "1979-05-27T07:32:00Z");
    }

    #[test]
    fn inline_tables_and_arrays_keep_spans() {
        let src = "a = [1, { b = true }]\n";
        let root = parse(src).unwrap();
        let a = table(&root).get("a").unwrap();
        let Value::Array(items) = &a.node.value else {
            panic!("not an array")
        };
        assert_eq!(text(src, &items[0].span), "1");
        let b = table(&items[1]).get("b").unwrap();
        assert_eq!(text(src, &b.key_span), "b");
        assert_eq!(text(src, &b.node.span), "true");
    }

    #[test]
    fn syntax_errors_carry_a_span() {
        let err = parse("[node]\nname = \n").unwrap_err();
        assert!(err.span.is_some(), "{err:?}");
        let dup = parse("a = 1\na = 2\n").unwrap_err();
        assert!(dup.message.contains("duplicate"), "{dup:?}");
    }
}
