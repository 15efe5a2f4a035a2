//! `SHOW …`, ksqlDB's `LIST …` and `DESCRIBE` as queries over the
//! system tables.

use super::*;

/// eddy's `SHOW …` forms as queries over `eddy_catalog`, consuming their
/// tokens; `None` (nothing consumed) for the SHOWs DataFusion answers
/// (`SHOW ALL`, `SHOW search_path`, …).
pub fn show_query(p: &mut Parser) -> Result<Option<String>> {
    let words: Vec<String> = (1..4)
        .map(|i| match p.peek_nth_token(i).token {
            Token::Word(w) => w.value.to_ascii_lowercase(),
            _ => String::new(),
        })
        .collect();
    let (w1, w2, w3) = (words[0].as_str(), words[1].as_str(), words[2].as_str());
    let catalog = crate::engine::system::SCHEMA;
    let (consumed, query) = match (w1, w2) {
        // As ksqlDB: topics named with a leading `_` (the registry's
        // `_schemas`, eddy's own) only with SHOW ALL TOPICS.
        ("topics", _) => (
            2,
            format!(
                "SELECT name AS topic FROM {catalog}.topics WHERE left(name, 1) <> '_' ORDER BY name"
            ),
        ),
        ("all", "topics") => (
            3,
            format!("SELECT name AS topic FROM {catalog}.topics ORDER BY name"),
        ),
        ("streams" | "tables" | "views", _) => (
            2,
            format!(
                "SELECT name FROM {catalog}.relations WHERE kind = '{}' ORDER BY name",
                &w1[..w1.len() - 1]
            ),
        ),
        // Materialize's words: a source is a stream here.
        ("sources", _) => (
            2,
            format!(
                "SELECT name, topic FROM {catalog}.relations WHERE kind = 'stream' ORDER BY name"
            ),
        ),
        ("connections", _) => (
            2,
            format!(
                "SELECT name, 'kafka' AS type FROM {catalog}.relations WHERE kind = 'connection' ORDER BY name"
            ),
        ),
        // ksqlDB's: the persistent queries (their sinks).
        ("queries", _) => (
            2,
            format!(
                "SELECT upper(name) AS query_id, 'RUNNING' AS status, topic AS sink_topic, create_sql AS query \
                 FROM {catalog}.relations WHERE kind = 'sink' AND create_sql NOT ILIKE 'CREATE SINK%' ORDER BY name"
            ),
        ),
        ("sinks", _) => (
            2,
            format!(
                "SELECT name, topic FROM {catalog}.relations WHERE kind = 'sink' ORDER BY name"
            ),
        ),
        // Materialize's: SHOW INDEXES [ON|FROM|IN relation].
        ("indexes", _) => {
            p.next_token();
            p.next_token();
            let filter = if ["on", "from", "in"]
                .iter()
                .any(|w| word_is(&p.peek_token().token, w))
            {
                p.next_token();
                let on = relation_name(p)?;
                format!(" WHERE \"on\" = '{}'", on.replace('\'', "''"))
            } else {
                String::new()
            };
            return Ok(Some(format!(
                "SELECT name, \"on\", 'default' AS cluster, key FROM {catalog}.indexes{filter} ORDER BY name"
            )));
        }
        ("materialized", "views") => (
            3,
            format!("SELECT * FROM {catalog}.materialized_views ORDER BY name"),
        ),
        ("dataflows", _) => (2, format!("SELECT * FROM {catalog}.dataflow_operators")),
        ("decode_errors", _) => (
            2,
            format!("SELECT * FROM {catalog}.decode_errors ORDER BY relation"),
        ),
        ("consumer", "groups") => (
            3,
            format!("SELECT * FROM {catalog}.consumer_groups ORDER BY group_id, topic, partition"),
        ),
        ("create", "stream" | "table" | "view" | "source" | "connection" | "sink" | "index")
        | ("create", "materialized") => {
            let (kind, n) = match w2 {
                "materialized" if w3 == "view" => ("materialized view", 4),
                "materialized" => return Ok(None),
                "source" => ("stream", 3),
                k => (k, 3),
            };
            for _ in 0..n {
                p.next_token();
            }
            let name = relation_name(p)?;
            return Ok(Some(format!(
                "SELECT name, create_sql FROM {catalog}.relations WHERE kind = '{kind}' AND name = '{}'",
                name.replace('\'', "''")
            )));
        }
        _ => return Ok(None),
    };
    for _ in 0..consumed {
        p.next_token();
    }
    Ok(Some(query))
}

/// `DESCRIBE relation` (ksqlDB, MySQL): its columns, typed as PostgreSQL
/// names them (DataFusion's own prints Arrow's), from DESCRIBE.
pub(super) fn describe(p: &mut Parser<'_>) -> Result<Statement> {
    p.next_token();
    let name = relation_name(p)?;
    let query = format!(
        "SELECT column_name, {}(data_type) AS data_type, is_nullable \
         FROM information_schema.\"columns\" \
         WHERE table_name = '{}' ORDER BY ordinal_position",
        crate::engine::pg_compat::ARROW_FULL_TYPE_NAME,
        name.replace('\'', "''")
    );
    let mut s = Parser::parse_sql(&PostgreSqlDialect {}, &query).map_err(syntax)?;
    let mut s = s.pop().ok_or_else(|| syntax("empty DESCRIBE query"))?;
    crate::engine::pg_compat::rewrite(&mut s);
    let text = s.to_string();
    Ok(classify(s, text))
}
