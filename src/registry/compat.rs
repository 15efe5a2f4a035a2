//! Compatibility of a new Avro schema with a subject's earlier ones, by
//! Avro's schema resolution rules (apache-avro's `SchemaCompatibility`):
//! BACKWARD means the new schema reads data written with the earlier ones,
//! FORWARD that the earlier ones read data written with the new one, FULL
//! both; the `_TRANSITIVE` levels check every live version, the others the
//! latest only (the caller picks which). A resolution that may fail for
//! some data (a writer's union branch or enum symbol the reader lacks) is
//! incompatible, as in Confluent's registry.

use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};

use super::Level;

/// Whether data written with `writer` always reads with `reader`: the
/// reason it does not.
fn reads(writer: &Schema, reader: &Schema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        Ok(Compatibility::Partial) => {
            Some("some values of the writer's schema do not resolve to the reader's".into())
        }
        Err(e) => Some(e.to_string()),
    }
}

/// The reasons `new` is incompatible with `earlier` at `level` (empty:
/// compatible).
pub fn check(level: Level, new: &Schema, earlier: &[std::sync::Arc<Schema>]) -> Vec<String> {
    let (backward, forward) = match level {
        Level::None => return vec![],
        Level::Backward | Level::BackwardTransitive => (true, false),
        Level::Forward | Level::ForwardTransitive => (false, true),
        Level::Full | Level::FullTransitive => (true, true),
    };
    let mut out = Vec::new();
    for old in earlier {
        if backward && let Some(why) = reads(old, new) {
            out.push(format!(
                "{{errorType:'READER_INCOMPATIBLE', description:'the new schema cannot read data written with an earlier one: {why}'}}"
            ));
        }
        if forward && let Some(why) = reads(new, old) {
            out.push(format!(
                "{{errorType:'WRITER_INCOMPATIBLE', description:'an earlier schema cannot read data written with the new one: {why}'}}"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;

    fn s(text: &str) -> Arc<Schema> {
        Arc::new(Schema::parse_str(text).unwrap())
    }

    #[test]
    fn levels_follow_avro_resolution() {
        let v1 = s(r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"}]}"#);
        // A field with a default added: backward and forward compatible.
        let v2 = s(
            r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"},{"name":"b","type":"string","default":""}]}"#,
        );
        // A field without a default added: the new schema cannot read old
        // data (not backward), old readers ignore it (forward).
        let v3 = s(
            r#"{"type":"record","name":"r","fields":[{"name":"a","type":"int"},{"name":"c","type":"string"}]}"#,
        );
        // int → string: neither.
        let v4 = s(r#"{"type":"record","name":"r","fields":[{"name":"a","type":"string"}]}"#);
        // int → long: a promotion (backward only).
        let v5 = s(r#"{"type":"record","name":"r","fields":[{"name":"a","type":"long"}]}"#);
        let ok = |l, new: &Arc<Schema>| check(l, new, std::slice::from_ref(&v1)).is_empty();
        assert!(ok(Level::Full, &v2));
        assert!(!ok(Level::Backward, &v3));
        assert!(ok(Level::Forward, &v3));
        assert!(!ok(Level::Backward, &v4));
        assert!(!ok(Level::Forward, &v4));
        assert!(ok(Level::None, &v4));
        assert!(ok(Level::Backward, &v5));
        assert!(!ok(Level::Forward, &v5));
        assert!(!ok(Level::Full, &v5));
    }
}
