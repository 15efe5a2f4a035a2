//! eddy's statements around sqlparser (the version DataFusion re-exports):
//! `CREATE TOPIC`, `CREATE STREAM` (with eddy's, ksqlDB's and Materialize's
//! option spellings), `DROP TOPIC|STREAM`, `SHOW …`. Everything else is a
//! sqlparser statement, kept with its text.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::{
    ColumnDef, CopyLegacyOption, CopyOption, DataType as SqlType, Expr, SqlOption,
    Statement as SqlStatement, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use super::limits::Limits;
use super::{CopyFormat, EngineError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropKind {
    Topic,
    Stream,
    Table,
    View,
    MaterializedView,
    Sink,
}

impl DropKind {
    pub fn noun(&self) -> &'static str {
        match self {
            DropKind::Topic => "topic",
            DropKind::Stream => "stream",
            DropKind::Table => "table",
            DropKind::View => "view",
            DropKind::MaterializedView => "materialized view",
            DropKind::Sink => "sink",
        }
    }
}

#[derive(Debug)]
pub enum Statement {
    /// `ALTER TOPIC t SET (k = v, …)` / `RESET (k, …)`: Kafka topic
    /// configs (`partitions` grows the partition count).
    AlterTopic {
        name: String,
        set: BTreeMap<String, String>,
        reset: Vec<String>,
    },
    CreateTopic {
        name: String,
        options: BTreeMap<String, String>,
        if_not_exists: bool,
    },
    CreateStream {
        name: String,
        columns: Vec<ColumnDef>,
        /// Option keys lower-cased (`topic`, `format`, `kafka_topic`,
        /// `value_format`, `partitions`, Kafka config names).
        options: BTreeMap<String, String>,
        if_not_exists: bool,
        sql: String,
    },
    Drop {
        kind: DropKind,
        names: Vec<String>,
        if_exists: bool,
        cascade: bool,
    },
    /// `CREATE SINK s FROM relation INTO TOPIC 't'` (or `WITH (topic =
    /// 't')`, RisingWave's spelling).
    CreateSink {
        name: String,
        from: String,
        topic: String,
        if_not_exists: bool,
        sql: String,
    },
    /// `FLUSH` (RisingWave): wait until every view reflects every write.
    Flush,
    /// `SUBSCRIBE [TO] name [WITH (SNAPSHOT = false)]`, alone or as `COPY
    /// (SUBSCRIBE …) TO STDOUT` (Materialize): the relation's rows, then
    /// its changes as they happen.
    Subscribe { name: String, snapshot: bool },
    /// Any other statement, with its SQL text.
    Sql(Box<SqlStatement>, String),
}

fn word_is(t: &Token, w: &str) -> bool {
    matches!(t, Token::Word(x) if x.value.eq_ignore_ascii_case(w))
}

fn syntax(e: impl std::fmt::Display) -> EngineError {
    EngineError::Syntax(e.to_string())
}

/// sqlparser's error, with its recursion limit (parentheses or
/// subqueries nested too deeply) as a limit error (54001).
fn parser_error(e: ParserError) -> EngineError {
    match e {
        ParserError::RecursionLimitExceeded => EngineError::Limit {
            code: "54001",
            message: "statement is too complex: parentheses or subqueries nest too deeply".into(),
        },
        other => syntax(other),
    }
}

fn option_value(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.clone(),
            Value::Boolean(b) => b.to_string(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

pub(super) fn options(opts: Vec<SqlOption>) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for o in opts {
        match o {
            SqlOption::KeyValue { key, value } => {
                out.insert(key.value.to_ascii_lowercase(), option_value(&value));
            }
            other => return Err(EngineError::Syntax(format!("unexpected option {other}"))),
        }
    }
    Ok(out)
}

/// Split a query string into statements and parse each, within the
/// default [`Limits`].
pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    parse_with(sql, &Limits::default())
}

/// Split a query string into statements and parse each, refusing what is
/// over `limits` before anything walks it.
pub fn parse_with(sql: &str, limits: &Limits) -> Result<Vec<Statement>> {
    limits.check_text(sql)?;
    let dialect = PostgreSqlDialect {};
    let mut p = Parser::new(&dialect).try_with_sql(sql).map_err(syntax)?;
    let mut out = Vec::new();
    loop {
        while p.consume_token(&Token::SemiColon) {}
        if p.peek_token().token == Token::EOF {
            break;
        }
        limits.check_count(out.len())?;
        let start = p.peek_token().span.start;
        let t0 = p.peek_nth_token(0).token;
        let t1 = p.peek_nth_token(1).token;
        let stmt = if word_is(&t0, "create") && (word_is(&t1, "topic") || word_is(&t1, "stream")) {
            p.next_token();
            let is_topic = word_is(&p.next_token().token, "topic");
            let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
            let name = p.parse_object_name(false).map_err(syntax)?.to_string();
            if is_topic {
                let opts = options(p.parse_options(Keyword::WITH).map_err(syntax)?)?;
                Statement::CreateTopic {
                    name,
                    options: opts,
                    if_not_exists,
                }
            } else {
                let (columns, _constraints) = p.parse_columns().map_err(syntax)?;
                let opts = options(p.parse_options(Keyword::WITH).map_err(syntax)?)?;
                let end = p.peek_token().span.start;
                Statement::CreateStream {
                    name,
                    columns,
                    options: opts,
                    if_not_exists,
                    sql: slice(sql, start, end),
                }
            }
        } else if word_is(&t0, "create") && word_is(&t1, "sink") {
            p.next_token();
            p.next_token();
            let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
            let name = p.parse_object_name(false).map_err(syntax)?.to_string();
            p.expect_keyword(Keyword::FROM).map_err(syntax)?;
            let from = p.parse_object_name(false).map_err(syntax)?.to_string();
            let topic = if p.parse_keyword(Keyword::INTO) {
                if !word_is(&p.next_token().token, "topic") {
                    return Err(syntax("expected INTO TOPIC 'name'"));
                }
                p.parse_literal_string().map_err(syntax)?
            } else if p.peek_keyword(Keyword::WITH) {
                let mut opts = options(p.parse_options(Keyword::WITH).map_err(syntax)?)?;
                opts.remove("topic")
                    .ok_or_else(|| syntax("CREATE SINK … WITH (…) needs topic = 'name'"))?
            } else {
                return Err(syntax(
                    "expected INTO TOPIC 'name' after CREATE SINK … FROM …",
                ));
            };
            let end = p.peek_token().span.start;
            Statement::CreateSink {
                name,
                from,
                topic,
                if_not_exists,
                sql: slice(sql, start, end),
            }
        } else if word_is(&t0, "drop")
            && (word_is(&t1, "topic") || word_is(&t1, "stream") || word_is(&t1, "sink"))
        {
            p.next_token();
            let kind = match &p.next_token().token {
                t if word_is(t, "topic") => DropKind::Topic,
                t if word_is(t, "sink") => DropKind::Sink,
                _ => DropKind::Stream,
            };
            let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let names = p
                .parse_comma_separated(|p| p.parse_object_name(false))
                .map_err(syntax)?
                .iter()
                .map(|n| n.to_string())
                .collect();
            let cascade = p.parse_one_of_keywords(&[Keyword::CASCADE, Keyword::RESTRICT])
                == Some(Keyword::CASCADE);
            Statement::Drop {
                kind,
                names,
                if_exists,
                cascade,
            }
        } else if word_is(&t0, "alter") && word_is(&t1, "topic") {
            p.next_token();
            p.next_token();
            let name = p.parse_object_name(false).map_err(syntax)?.to_string();
            let (mut set, mut reset) = (BTreeMap::new(), Vec::new());
            if p.peek_keyword(Keyword::SET) {
                set = options(p.parse_options(Keyword::SET).map_err(syntax)?)?;
            } else if p.parse_keyword(Keyword::RESET) {
                p.expect_token(&Token::LParen).map_err(syntax)?;
                reset = p
                    .parse_comma_separated(|p| p.parse_identifier())
                    .map_err(syntax)?
                    .into_iter()
                    .map(|i| i.value.to_ascii_lowercase())
                    .collect();
                p.expect_token(&Token::RParen).map_err(syntax)?;
            } else {
                return Err(EngineError::Syntax(format!(
                    "expected SET (…) or RESET (…) after ALTER TOPIC {name}"
                )));
            }
            Statement::AlterTopic { name, set, reset }
        } else if word_is(&t0, "subscribe") {
            p.next_token();
            subscribe(&mut p)?
        } else if word_is(&t0, "copy")
            && t1 == Token::LParen
            && word_is(&p.peek_nth_token(2).token, "subscribe")
        {
            p.next_token();
            p.next_token();
            p.next_token();
            let stmt = subscribe(&mut p)?;
            p.expect_token(&Token::RParen).map_err(syntax)?;
            if !(p.parse_keyword(Keyword::TO) && p.parse_keyword(Keyword::STDOUT)) {
                return Err(syntax("expected TO STDOUT after COPY (SUBSCRIBE …)"));
            }
            stmt
        } else if word_is(&t0, "flush") && matches!(t1, Token::EOF | Token::SemiColon) {
            p.next_token();
            Statement::Flush
        } else if word_is(&t0, "show")
            && let Some(query) = show_query(&mut p)?
        {
            // SHOW … is a query over the system tables, so it runs (and
            // describes its columns) like any SELECT, in either protocol.
            let mut stmts = Parser::parse_sql(&dialect, &query).map_err(syntax)?;
            let s = stmts.pop().ok_or_else(|| syntax("empty SHOW query"))?;
            Statement::Sql(Box::new(s), query)
        } else {
            let mut s = limits.check_depth(p.parse_statement().map_err(parser_error)?)?;
            let end = p.peek_token().span.start;
            let text = slice(sql, start, end);
            // A client catalog query DataFusion cannot plan as written
            // runs as rewritten.
            let text = if text.trim().is_empty() || super::pg_compat::rewrite(&mut s) {
                s.to_string()
            } else {
                text
            };
            if let Some(message) = super::windows::invalid_call(&s) {
                return Err(EngineError::Invalid(message));
            }
            Statement::Sql(Box::new(s), text)
        };
        out.push(stmt);
        if !p.consume_token(&Token::SemiColon) && p.peek_token().token != Token::EOF {
            return Err(EngineError::Syntax(format!(
                "unexpected {} after the end of a statement",
                p.peek_token().token
            )));
        }
    }
    Ok(out)
}

/// The rest of `SUBSCRIBE [TO] name [WITH (SNAPSHOT = bool)]`.
fn subscribe(p: &mut Parser<'_>) -> Result<Statement> {
    let _ = p.parse_keyword(Keyword::TO);
    let name = p.parse_object_name(false).map_err(syntax)?.to_string();
    let mut snapshot = true;
    if p.peek_keyword(Keyword::WITH) {
        for (k, v) in options(p.parse_options(Keyword::WITH).map_err(syntax)?)? {
            match k.as_str() {
                "snapshot" => snapshot = !v.eq_ignore_ascii_case("false"),
                other => {
                    return Err(EngineError::Unsupported(format!(
                        "SUBSCRIBE option {other} (supported: SNAPSHOT)"
                    )));
                }
            }
        }
    }
    Ok(Statement::Subscribe { name, snapshot })
}

/// eddy's `SHOW …` forms as queries over `eddy_catalog`, consuming their
/// tokens; `None` (nothing consumed) for the SHOWs DataFusion answers
/// (`SHOW ALL`, `SHOW search_path`, …).
fn show_query(p: &mut Parser) -> Result<Option<String>> {
    let words: Vec<String> = (1..4)
        .map(|i| match p.peek_nth_token(i).token {
            Token::Word(w) => w.value.to_ascii_lowercase(),
            _ => String::new(),
        })
        .collect();
    let (w1, w2, w3) = (words[0].as_str(), words[1].as_str(), words[2].as_str());
    let catalog = super::system::SCHEMA;
    let (consumed, query) = match (w1, w2) {
        ("topics", _) => (
            2,
            format!("SELECT name AS topic FROM {catalog}.topics WHERE NOT internal ORDER BY name"),
        ),
        ("streams" | "tables" | "views", _) => (
            2,
            format!(
                "SELECT name FROM {catalog}.relations WHERE kind = '{}' ORDER BY name",
                &w1[..w1.len() - 1]
            ),
        ),
        ("sinks", _) => (
            2,
            format!(
                "SELECT name, topic FROM {catalog}.relations WHERE kind = 'sink' ORDER BY name"
            ),
        ),
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
        ("create", "stream" | "table" | "view") | ("create", "materialized") => {
            let (kind, n) = match w2 {
                "materialized" if w3 == "view" => ("materialized view", 4),
                "materialized" => return Ok(None),
                k => (k, 3),
            };
            for _ in 0..n {
                p.next_token();
            }
            let name = p.parse_object_name(false).map_err(syntax)?.to_string();
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

/// The text between two token locations (1-based line/column).
fn slice(
    sql: &str,
    start: datafusion::sql::sqlparser::tokenizer::Location,
    end: datafusion::sql::sqlparser::tokenizer::Location,
) -> String {
    let offset = |loc: datafusion::sql::sqlparser::tokenizer::Location| -> usize {
        if loc.line == 0 {
            return sql.len();
        }
        let mut line = 1u64;
        let mut col = 1u64;
        for (i, ch) in sql.char_indices() {
            if line == loc.line && col == loc.column {
                return i;
            }
            if ch == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        sql.len()
    };
    let (a, b) = (offset(start), offset(end));
    sql.get(a..b.max(a))
        .unwrap_or("")
        .trim()
        .trim_end_matches(';')
        .trim()
        .to_string()
}

/// Parse a SQL type name (as stored in the catalog).
pub fn parse_type(s: &str) -> Result<SqlType> {
    let dialect = PostgreSqlDialect {};
    Parser::new(&dialect)
        .try_with_sql(s)
        .and_then(|mut p| p.parse_data_type())
        .map_err(syntax)
}

/// The format of `COPY … TO STDOUT [WITH (FORMAT …, HEADER …)]`.
pub fn copy_format(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<CopyFormat> {
    let mut format = "text".to_string();
    let mut header = false;
    for o in options {
        match o {
            CopyOption::Format(f) => format = f.value.to_ascii_lowercase(),
            CopyOption::Header(h) => header = *h,
            other => {
                return Err(EngineError::Unsupported(format!("COPY option {other}")));
            }
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Csv(_) => format = "csv".into(),
            CopyLegacyOption::Binary => format = "binary".into(),
            other => {
                return Err(EngineError::Unsupported(format!("COPY option {other}")));
            }
        }
    }
    match format.as_str() {
        "text" => Ok(CopyFormat::Text),
        "csv" => Ok(CopyFormat::Csv { header }),
        "binary" => Ok(CopyFormat::Binary),
        other => Err(EngineError::Invalid(format!("COPY format {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eddy_statements_parse() {
        let s = parse(
            "CREATE TOPIC t WITH (partitions = 3, \"retention.ms\" = 1000); \
             CREATE STREAM s (a int, b string) WITH (KAFKA_TOPIC = 't', VALUE_FORMAT = 'JSON'); \
             SELECT 1; DROP STREAM IF EXISTS s; SHOW TOPICS",
        )
        .expect("parses");
        assert_eq!(s.len(), 5);
        match &s[0] {
            Statement::CreateTopic { name, options, .. } => {
                assert_eq!(name, "t");
                assert_eq!(options["partitions"], "3");
                assert_eq!(options["retention.ms"], "1000");
            }
            other => panic!("{other:?}"),
        }
        match &s[1] {
            Statement::CreateStream {
                columns,
                options,
                sql,
                ..
            } => {
                assert_eq!(columns.len(), 2);
                assert_eq!(options["kafka_topic"], "t");
                assert!(sql.starts_with("CREATE STREAM s"), "{sql}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&s[2], Statement::Sql(_, t) if t == "SELECT 1"));
        assert!(matches!(
            &s[3],
            Statement::Drop {
                if_exists: true,
                ..
            }
        ));
        assert!(
            matches!(&s[4], Statement::Sql(_, q) if q.contains("eddy_catalog.topics")),
            "SHOW TOPICS is a query over eddy_catalog"
        );
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(matches!(parse("SELEC 1"), Err(EngineError::Syntax(_))));
        assert!(matches!(
            parse("CREATE STREAM s (a int"),
            Err(EngineError::Syntax(_))
        ));
    }
}
