//! eddy's statements around sqlparser (the version DataFusion re-exports):
//! the statement families (`Statement`, `Ddl`, `Dml`, …), `classify`, which
//! puts a sqlparser statement in its family, and `parse_with`, the one
//! dispatch over a statement's first words to the parsers of eddy's own
//! statements. Everything else is a sqlparser statement, kept with its text.
//!
//! The parsers live by kind: `create.rs` (topics, streams, sources,
//! connections, sinks, indexes, DROP, ALTER TOPIC), `ksql.rs` (ksqlDB's
//! clauses sqlparser does not read: EMIT, WINDOW, WITHIN, PARTITION BY,
//! WATERMARK FOR), `show.rs` (SHOW, LIST, DESCRIBE as system-table
//! queries), `types.rs` (column types and column lists).
//!
//! (About 1,050 lines: the family types, about 450, are one vocabulary
//! the engine matches on; the dispatch is one `if` chain so that a word
//! is claimed in one place.)

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::{
    AlterRoleOperation, CloseCursor, ColumnDef, CopyLegacyOption, CopyOption, CopySource,
    CopyTarget, CreateRole, CreateTable, CreateView, DataType as SqlType, DeclareType, Delete,
    Expr, Grant, ObjectName, ObjectType, Query, Reset, ResetStatement, Revoke, SqlOption,
    Statement as SqlStatement, Update, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use super::limits::Limits;
use super::{CopyFormat, EngineError, Result, SessionCommand};
mod create;
mod ksql;
mod show;
mod types;

pub use ksql::WATERMARK_OPTION;
use ksql::{Emit, blank_emits};
pub use show::show_query;
pub use types::parse_type;
use types::stream_columns;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropKind {
    Topic,
    Stream,
    Table,
    View,
    MaterializedView,
    Sink,
    /// A stream made by CREATE SOURCE (any stream).
    Source,
    Connection,
    Index,
}

impl DropKind {
    pub fn noun(&self) -> &'static str {
        match self {
            DropKind::Topic => "topic",
            DropKind::Stream | DropKind::Source => "stream",
            DropKind::Connection => "connection",
            DropKind::Table => "table",
            DropKind::View => "view",
            DropKind::MaterializedView => "materialized view",
            DropKind::Sink => "sink",
            DropKind::Index => "index",
        }
    }
}

/// A parsed statement, by the part of the engine that runs it. The parse
/// decides this once (`classify`); `Engine::execute_with` is one exhaustive
/// match over the families and the protocols route by the same value
/// ([`Statement::is_own`]), so a statement cannot be routed one way and run
/// another. Adding a statement: its variant in a family, its parse here,
/// its arm in the family's file; the compiler names any place left.
#[derive(Debug)]
pub enum Statement {
    /// Topics, streams, tables, views, materialized views, sinks
    /// (`ddl.rs`).
    Ddl(Ddl),
    /// INSERT, UPDATE, DELETE (`dml.rs`).
    Dml(Dml),
    /// Roles and privileges: CREATE/ALTER/DROP ROLE (and USER), GRANT,
    /// REVOKE (`access.rs`).
    Access(Access),
    /// COPY … TO STDOUT, COPY … FROM STDIN (`copy.rs`).
    Copy(Copy),
    /// `SUBSCRIBE [TO] name|(query) [WITH (SNAPSHOT = false)]`, alone or
    /// as `COPY (SUBSCRIBE …) TO STDOUT` (Materialize): the relation's (or
    /// the query's) rows, then their changes as they happen.
    Subscribe {
        /// The relation (empty when `query` is given).
        name: String,
        query: Option<Box<Query>>,
        snapshot: bool,
    },
    /// `FLUSH` (RisingWave): wait until every view reflects every write.
    Flush,
    /// A statement about the connection's own state, which only the
    /// protocol layer holds.
    Session(SessionCommand),
    /// A query of the user's (SELECT, VALUES, WITH, EXPLAIN of one; SHOW
    /// … arrives as a query over `eddy_catalog`): planned from this parse
    /// (`query.rs`).
    Query(Box<SqlStatement>, String),
    /// A query of PostgreSQL's catalogs (`pg_catalog`,
    /// `information_schema`): planned by datafusion-postgres'
    /// compatibility parser, run and encoded as any query.
    CatalogQuery(Box<SqlStatement>, String),
    /// Everything else (SET/SHOW of settings, BEGIN/COMMIT, cursors):
    /// datafusion-postgres' session, with its text.
    Other(Box<SqlStatement>, String),
}

/// Statements that define or remove objects.
#[derive(Debug)]
pub enum Ddl {
    /// The streams of a load generator with several tables (`FOR ALL
    /// TABLES`), each a `CreateStream` with its own recorded statement:
    /// created together, answered with one CREATE SOURCE.
    CreateSources(Vec<Ddl>),
    /// `CREATE [DEFAULT] INDEX [name] ON relation [(columns)]`
    /// (Materialize's; `IN CLUSTER` and `USING ARRANGEMENT` read past).
    /// `columns`: None for a default index (the relation's key, else all
    /// its columns).
    CreateIndex {
        name: Option<String>,
        on: String,
        columns: Option<Vec<String>>,
        if_not_exists: bool,
        sql: String,
    },
    CreateTopic {
        name: String,
        options: BTreeMap<String, String>,
        if_not_exists: bool,
    },
    /// `ALTER TOPIC t SET (k = v, …)` / `RESET (k, …)`: Kafka topic
    /// configs (`partitions` grows the partition count).
    AlterTopic {
        name: String,
        set: BTreeMap<String, String>,
        reset: Vec<String>,
    },
    CreateStream {
        name: String,
        columns: Vec<ColumnDef>,
        /// The columns declared `KEY` (ksqlDB): held in the record key.
        keys: Vec<String>,
        /// Option keys lower-cased (`topic`, `format`, `kafka_topic`,
        /// `value_format`, `partitions`, Kafka config names).
        options: BTreeMap<String, String>,
        if_not_exists: bool,
        sql: String,
    },
    /// ksqlDB's persistent queries (`CREATE STREAM|TABLE … AS SELECT`).
    CreatePersistent(Box<Persistent>),
    /// `CREATE TABLE` (with a query: `CREATE TABLE … AS`), with its text.
    CreateTable(Box<CreateTable>, String),
    /// `SELECT … INTO t`: `CREATE TABLE t AS SELECT …`.
    SelectInto(Box<Query>),
    /// `CREATE [MATERIALIZED] VIEW`, with its text.
    /// With RisingWave's EMIT ON WINDOW CLOSE, how its windows close.
    CreateView(
        Box<CreateView>,
        String,
        Option<crate::dataflow::aggregate::WindowClose>,
    ),
    /// `CREATE SINK s FROM relation INTO TOPIC 't'` (or `WITH (topic =
    /// 't')`, RisingWave's spelling).
    CreateSink {
        name: String,
        from: String,
        topic: String,
        /// `INTO KAFKA CONNECTION c`: the connection's cluster.
        connection: Option<String>,
        /// FORMAT AVRO (else JSON).
        avro: bool,
        /// ENVELOPE UPSERT with KEY (columns) (else Debezium).
        upsert_key: Option<Vec<String>>,
        if_not_exists: bool,
        sql: String,
    },
    /// Materialize's `CREATE CONNECTION name TO KAFKA (BROKER '…')`,
    /// which sources name.
    CreateConnection {
        name: String,
        broker: String,
        /// librdkafka properties (SASL, TLS) for an external cluster.
        properties: BTreeMap<String, String>,
        /// `TO CONFLUENT SCHEMA REGISTRY (URL …)` (eddy's own registry
        /// serves), not a Kafka cluster.
        registry: bool,
        if_not_exists: bool,
        sql: String,
    },
    Drop {
        kind: DropKind,
        names: Vec<String>,
        if_exists: bool,
        cascade: bool,
        /// ksqlDB's `… DELETE TOPIC`: the topic goes too.
        delete_topic: bool,
    },
    /// ksqlDB's `TERMINATE query_id` (`*`: ALL): a persistent query's
    /// sink dropped, its relation kept.
    Terminate(Vec<String>),
}

/// A persistent query as ksqlDB has them: `CREATE STREAM s [WITH (…)] AS
/// SELECT …` (and `CREATE TABLE t … AS SELECT …` over a stream): a
/// relation kept by a dataflow whose rows are also written, as ksqlDB
/// writes them, into a topic (`persistent.rs`).
#[derive(Debug)]
pub struct Persistent {
    /// A table (an upsert changelog by key) or a stream (appended rows).
    pub table: bool,
    pub name: String,
    /// The topic ksqlDB would name: the name as ksqlDB spells it
    /// (unquoted upper-cased); `KAFKA_TOPIC` in `options` overrides it.
    pub topic: String,
    /// `WITH (…)` keys lower-cased.
    pub options: BTreeMap<String, String>,
    pub query: Box<Query>,
    pub if_not_exists: bool,
    pub sql: String,
    /// A stream query's `PARTITION BY column`: its records keyed (and so
    /// partitioned) by that column.
    pub partition_by: Option<String>,
    /// A windowed query's closing (its WINDOW clause, EMIT FINAL).
    pub window: Option<crate::dataflow::aggregate::WindowClose>,
    /// ksqlDB's `INSERT INTO name SELECT … EMIT CHANGES`: the query's rows
    /// go on into existing stream `name`.
    pub insert: bool,
    /// A stream-stream join's WITHIN window.
    pub within: Option<crate::dataflow::join::JoinWindow>,
}

/// Statements about roles and privileges, kept as parsed; `access.rs`
/// reads them when they run.
#[derive(Debug)]
pub enum Access {
    /// `CREATE ROLE`, or `CREATE USER` (`user`: LOGIN unless NOLOGIN).
    CreateRole {
        role: Box<CreateRole>,
        user: bool,
    },
    AlterRole {
        name: String,
        operation: Box<AlterRoleOperation>,
    },
    DropRole {
        names: Vec<String>,
        if_exists: bool,
    },
    Grant(Box<Grant>),
    Revoke(Box<Revoke>),
}

/// Statements that change rows.
#[derive(Debug)]
pub enum Dml {
    /// The whole `INSERT`, planned by DataFusion from this parse.
    Insert(Box<SqlStatement>),
    Update(Box<Update>),
    Delete(Box<Delete>),
}

/// `COPY` in its forms.
#[derive(Debug)]
pub enum Copy {
    /// `COPY (query) | table [(columns)] TO STDOUT [options]`.
    To {
        source: CopySource,
        options: Vec<CopyOption>,
        legacy_options: Vec<CopyLegacyOption>,
    },
    /// `COPY table [(columns)] FROM STDIN [options]`.
    From {
        table: String,
        columns: Vec<String>,
        options: Vec<CopyOption>,
        legacy_options: Vec<CopyLegacyOption>,
    },
    /// Files, programs: refused when run (0A000).
    Other,
}

impl Statement {
    /// Whether the engine runs it itself; queries are planned by it too
    /// but answered as rows, and the rest pass through to
    /// datafusion-postgres.
    pub fn is_own(&self) -> bool {
        !matches!(
            self,
            Statement::Query(..) | Statement::CatalogQuery(..) | Statement::Other(..)
        )
    }

    /// The sqlparser statement it was parsed as, where the engine keeps
    /// one whole (queries, INSERT, pass-through statements).
    pub fn sql(&self) -> Option<&SqlStatement> {
        match self {
            Statement::Query(s, _)
            | Statement::CatalogQuery(s, _)
            | Statement::Other(s, _)
            | Statement::Dml(Dml::Insert(s)) => Some(s),
            _ => None,
        }
    }

    /// The sqlparser statement it was parsed from, for those the extended
    /// protocol keeps between Parse and Execute (queries, DML, COPY … TO,
    /// pass-through statements); `classify` gives it back.
    pub fn into_sql(self) -> Option<SqlStatement> {
        match self {
            Statement::Query(s, _)
            | Statement::CatalogQuery(s, _)
            | Statement::Other(s, _)
            | Statement::Dml(Dml::Insert(s)) => Some(*s),
            Statement::Dml(Dml::Update(u)) => Some(SqlStatement::Update(*u)),
            Statement::Dml(Dml::Delete(d)) => Some(SqlStatement::Delete(*d)),
            Statement::Copy(Copy::To {
                source,
                options,
                legacy_options,
            }) => Some(SqlStatement::Copy {
                source,
                to: true,
                target: CopyTarget::Stdout,
                options,
                legacy_options,
                values: Vec::new(),
            }),
            _ => None,
        }
    }
}

/// The family of a sqlparser statement (with its SQL text): the one list
/// of what the engine runs itself.
pub fn classify(s: SqlStatement, text: String) -> Statement {
    match s {
        SqlStatement::CreateTable(ct) => Statement::Ddl(Ddl::CreateTable(Box::new(ct), text)),
        SqlStatement::CreateView(v) => Statement::Ddl(Ddl::CreateView(Box::new(v), text, None)),
        SqlStatement::Drop {
            object_type:
                object_type @ (ObjectType::Table
                | ObjectType::View
                | ObjectType::MaterializedView
                | ObjectType::Index),
            names,
            if_exists,
            cascade,
            ..
        } => Statement::Ddl(Ddl::Drop {
            kind: match object_type {
                ObjectType::Table => DropKind::Table,
                ObjectType::View => DropKind::View,
                ObjectType::Index => DropKind::Index,
                _ => DropKind::MaterializedView,
            },
            names: names.iter().map(super::names::object).collect(),
            if_exists,
            cascade,
            delete_topic: false,
        }),
        SqlStatement::Query(q) if super::query::select_into(&q).is_some() => {
            Statement::Ddl(Ddl::SelectInto(q))
        }
        SqlStatement::CreateRole(role) => Statement::Access(Access::CreateRole {
            role: Box::new(role),
            user: false,
        }),
        SqlStatement::AlterRole { name, operation } => Statement::Access(Access::AlterRole {
            name: name.value,
            operation: Box::new(operation),
        }),
        SqlStatement::Drop {
            object_type: ObjectType::Role | ObjectType::User,
            names,
            if_exists,
            ..
        } => Statement::Access(Access::DropRole {
            names: names
                .iter()
                .map(|n| {
                    n.0.last()
                        .and_then(|p| p.as_ident())
                        .map(|i| i.value.clone())
                        .unwrap_or_else(|| n.to_string())
                })
                .collect(),
            if_exists,
        }),
        SqlStatement::Grant(g) => Statement::Access(Access::Grant(Box::new(g))),
        SqlStatement::Revoke(r) => Statement::Access(Access::Revoke(Box::new(r))),
        s @ SqlStatement::Insert(_) => Statement::Dml(Dml::Insert(Box::new(s))),
        SqlStatement::Update(u) => Statement::Dml(Dml::Update(Box::new(u))),
        SqlStatement::Delete(d) => Statement::Dml(Dml::Delete(Box::new(d))),
        SqlStatement::Copy {
            source,
            to: true,
            target: CopyTarget::Stdout,
            options,
            legacy_options,
            ..
        } => Statement::Copy(Copy::To {
            source,
            options,
            legacy_options,
        }),
        SqlStatement::Copy {
            source:
                CopySource::Table {
                    table_name,
                    columns,
                },
            to: false,
            target: CopyTarget::Stdin,
            options,
            legacy_options,
            ..
        } => Statement::Copy(Copy::From {
            table: super::names::object(&table_name),
            columns: columns.iter().map(super::names::ident).collect(),
            options,
            legacy_options,
        }),
        SqlStatement::Copy { .. } => Statement::Copy(Copy::Other),
        SqlStatement::Deallocate { name, .. } => {
            let all = name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all");
            Statement::Session(SessionCommand::Deallocate((!all).then_some(name.value)))
        }
        SqlStatement::Discard { object_type } => Statement::Session(SessionCommand::Discard(
            object_type.to_string().to_ascii_uppercase(),
        )),
        SqlStatement::UNLISTEN { .. } => Statement::Session(SessionCommand::Nothing("UNLISTEN")),
        SqlStatement::Declare { stmts }
            if stmts.len() == 1
                && stmts[0].declare_type == Some(DeclareType::Cursor)
                && stmts[0].for_query.is_some() =>
        {
            let mut d = stmts.into_iter().next().expect("one declaration");
            let name = d.names.first().map(|n| n.value.clone()).unwrap_or_default();
            let query = d.for_query.take().expect("a cursor's query");
            let hold = d.hold == Some(true);
            Statement::Session(SessionCommand::Declare { name, query, hold })
        }
        SqlStatement::Fetch {
            name, direction, ..
        } => {
            use datafusion::sql::sqlparser::ast::FetchDirection as D;
            let number = |v: &Value| match v {
                Value::Number(n, _) => n.parse::<usize>().ok(),
                _ => None,
            };
            let count = match &direction {
                D::Next | D::Forward { limit: None } => Some(1),
                D::Forward { limit: Some(v) } | D::Count { limit: v } => number(v),
                _ => None,
            };
            let forward = matches!(
                direction,
                D::Next | D::Forward { .. } | D::Count { .. } | D::ForwardAll | D::All
            );
            Statement::Session(SessionCommand::Fetch {
                name: name.value,
                count,
                forward,
            })
        }
        SqlStatement::Close { cursor } => Statement::Session(SessionCommand::Close(match cursor {
            CloseCursor::All => None,
            CloseCursor::Specific { name } => Some(name.value),
        })),
        SqlStatement::Reset(ResetStatement {
            reset: Reset::ALL, ..
        }) => Statement::Session(SessionCommand::Nothing("RESET")),
        s if super::query::is_user_query(&s) => Statement::Query(Box::new(s), text),
        s @ SqlStatement::Query(_) => Statement::CatalogQuery(Box::new(s), text),
        s => Statement::Other(Box::new(s), text),
    }
}

/// ksqlDB's `CREATE TABLE t [WITH (…)] AS SELECT …` as a persistent
/// query.
pub(super) fn persistent_table(
    ct: &datafusion::sql::sqlparser::ast::CreateTable,
    text: &str,
) -> Result<Persistent> {
    use datafusion::sql::sqlparser::ast::CreateTableOptions;
    let query = ct
        .query
        .clone()
        .ok_or_else(|| syntax("CREATE TABLE … AS without its SELECT"))?;
    let options = match &ct.table_options {
        CreateTableOptions::With(o) => options(o.clone())?,
        _ => Default::default(),
    };
    Ok(Persistent {
        table: true,
        name: super::names::object(&ct.name),
        topic: ksql_topic(&ct.name),
        options,
        query,
        if_not_exists: ct.if_not_exists,
        sql: text.to_string(),
        partition_by: None,
        window: None,
        insert: false,
        within: None,
    })
}

/// The topic ksqlDB names after a relation: its name as ksqlDB folds it
/// (unquoted identifiers upper-cased, quoted ones as written).
pub(super) fn ksql_topic(n: &ObjectName) -> String {
    match n.0.last().and_then(|p| p.as_ident()) {
        Some(i) if i.quote_style.is_some() => i.value.clone(),
        Some(i) => i.value.to_ascii_uppercase(),
        None => n.to_string(),
    }
}

/// The relation an object name at the parser denotes (folded:
/// `names::object`).
fn relation_name(p: &mut Parser<'_>) -> Result<String> {
    Ok(super::names::object(
        &p.parse_object_name(false).map_err(syntax)?,
    ))
}

/// A topic's name: Kafka's names are case-sensitive, so an unquoted one
/// is taken as typed (`CREATE TOPIC Orders` is the topic `Orders`, as
/// kcat names it); quotes (`"page-views"`) are dropped.
fn topic_name(n: &ObjectName) -> String {
    n.0.iter()
        .map(|p| match p.as_ident() {
            Some(i) => i.value.clone(),
            None => p.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
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
/// One query's text parsed (eddy's own rewrites applied).
pub fn parse_query(sql: &str) -> Result<Box<Query>> {
    let dialect = PostgreSqlDialect {};
    let mut s = Parser::new(&dialect)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statement())
        .map_err(parser_error)?;
    super::jsonb::rewrite_casts(&mut s);
    super::functions::rewrite_substring(&mut s);
    match s {
        SqlStatement::Query(q) => Ok(q),
        other => Err(syntax(format!("expected a query, found {other}"))),
    }
}

/// How many tokens ahead the token after a `WITH (…)` at the parser's
/// position is (the WITH's parentheses balanced).
fn p_with_end(p: &Parser<'_>) -> usize {
    let mut depth = 0usize;
    let mut n = 1;
    loop {
        match p.peek_nth_token(n).token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return n + 1;
                }
            }
            Token::EOF => return n,
            _ => {}
        }
        n += 1;
    }
}

pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    parse_with(sql, &Limits::default())
}

/// Split a query string into statements and parse each, refusing what is
/// over `limits` before anything walks it.
pub fn parse_with(sql: &str, limits: &Limits) -> Result<Vec<Statement>> {
    limits.check_text(sql)?;
    let dialect = PostgreSqlDialect {};
    let (blanked, emits) = blank_emits(sql)?;
    let mut p = Parser::new(&dialect)
        .try_with_sql(blanked.as_deref().unwrap_or(sql))
        .map_err(syntax)?;
    let mut slicer = Slicer::new(sql);
    let mut out = Vec::new();
    loop {
        while p.consume_token(&Token::SemiColon) {}
        if p.peek_token().token == Token::EOF {
            break;
        }
        limits.check_count(out.len())?;
        let start = p.peek_token().span.start;
        let mut cut = Cut {
            slicer: &mut slicer,
            start,
        };
        let t0 = p.peek_nth_token(0).token;
        let t1 = p.peek_nth_token(1).token;
        let stmt = if word_is(&t0, "set") && matches!(t1, Token::SingleQuotedString(_)) {
            // ksqlDB's `SET 'auto.offset.reset' = 'earliest'`: push
            // queries (EMIT CHANGES) start from the earliest row anyway.
            while !matches!(p.peek_token().token, Token::SemiColon | Token::EOF) {
                p.next_token();
            }
            Statement::Session(SessionCommand::Nothing("SET"))
        } else if word_is(&t0, "create") && (word_is(&t1, "topic") || word_is(&t1, "stream")) {
            create::topic_or_stream(&mut p, limits, &mut cut)?
        } else if word_is(&t0, "create")
            && (word_is(&t1, "source")
                || (word_is(&t1, "materialized") && word_is(&p.peek_nth_token(2).token, "source")))
        {
            p.next_token();
            if word_is(&p.next_token().token, "materialized") {
                p.next_token();
            }
            let stmt = create::source(&mut p)?;
            match stmt {
                Ddl::CreateStream {
                    name,
                    columns,
                    keys,
                    options,
                    if_not_exists,
                    ..
                } => Statement::Ddl(Ddl::CreateStream {
                    name,
                    columns,
                    keys,
                    options,
                    if_not_exists,
                    sql: cut.text(&p),
                }),
                other => Statement::Ddl(other),
            }
        } else if word_is(&t0, "create")
            && word_is(&t1, "unique")
            && word_is(&p.peek_nth_token(2).token, "index")
        {
            return Err(EngineError::Unsupported(
                "UNIQUE indexes (a table's PRIMARY KEY is its unique key: a write with the same key replaces the row)".into(),
            ));
        } else if word_is(&t0, "create")
            && (word_is(&t1, "index")
                || (word_is(&t1, "default") && word_is(&p.peek_nth_token(2).token, "index")))
        {
            p.next_token();
            let default = word_is(&p.next_token().token, "default");
            if default {
                p.next_token();
            }
            let ddl = create::create_index(&mut p, default)?;
            match ddl {
                Ddl::CreateIndex {
                    name,
                    on,
                    columns,
                    if_not_exists,
                    ..
                } => Statement::Ddl(Ddl::CreateIndex {
                    name,
                    on,
                    columns,
                    if_not_exists,
                    sql: cut.text(&p),
                }),
                other => Statement::Ddl(other),
            }
        } else if word_is(&t0, "create") && word_is(&t1, "connection") {
            p.next_token();
            p.next_token();
            let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
            let name = relation_name(&mut p)?;
            let (broker, properties, registry) = create::connection(&mut p)?;
            Statement::Ddl(Ddl::CreateConnection {
                name,
                broker,
                properties,
                registry,
                if_not_exists,
                sql: cut.text(&p),
            })
        } else if word_is(&t0, "create") && word_is(&t1, "sink") {
            create::sink(&mut p, &mut cut)?
        } else if word_is(&t0, "drop")
            && ["topic", "stream", "sink", "source", "connection"]
                .iter()
                .any(|w| word_is(&t1, w))
        {
            create::drop(&mut p)?
        } else if word_is(&t0, "terminate") {
            // ksqlDB's TERMINATE query_id | ALL: a persistent query's sink
            // stops (its relation stays, as in ksqlDB).
            p.next_token();
            let names = if word_is(&p.peek_token().token, "all") {
                p.next_token();
                vec!["*".to_string()]
            } else {
                vec![relation_name(&mut p)?]
            };
            Statement::Ddl(Ddl::Terminate(names))
        } else if word_is(&t0, "create") && word_is(&t1, "user") {
            // PostgreSQL's CREATE USER is CREATE ROLE … LOGIN (sqlparser
            // reads CREATE USER as Snowflake's statement).
            p.next_token();
            p.next_token();
            let role = p.parse_create_role().map_err(syntax)?;
            Statement::Access(Access::CreateRole {
                role: Box::new(role),
                user: true,
            })
        } else if word_is(&t0, "alter") && word_is(&t1, "user") {
            p.next_token();
            p.next_token();
            match p.parse_alter_role().map_err(syntax)? {
                SqlStatement::AlterRole { name, operation } => {
                    Statement::Access(Access::AlterRole {
                        name: name.value,
                        operation: Box::new(operation),
                    })
                }
                other => return Err(syntax(format!("unexpected {other}"))),
            }
        } else if word_is(&t0, "alter") && word_is(&t1, "topic") {
            create::alter_topic(&mut p)?
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
        } else if (word_is(&t0, "describe") || word_is(&t0, "desc"))
            && matches!(t1, Token::Word(_))
            && matches!(
                p.peek_nth_token(2).token,
                Token::EOF | Token::SemiColon | Token::Period
            )
        {
            show::describe(&mut p)?
        } else if word_is(&t0, "flush") && matches!(t1, Token::EOF | Token::SemiColon) {
            p.next_token();
            Statement::Flush
        } else if (word_is(&t0, "show")
            // ksqlDB's LIST STREAMS|TABLES|TOPICS|QUERIES.
            || (word_is(&t0, "list")
                && ["streams", "tables", "topics", "queries"]
                    .iter()
                    .any(|w| word_is(&t1, w))))
            && let Some(query) = show_query(&mut p)?
        {
            // SHOW … is a query over the system tables, so it runs (and
            // describes its columns) like any SELECT, in either protocol.
            let mut stmts = Parser::parse_sql(&dialect, &query).map_err(syntax)?;
            let s = stmts.pop().ok_or_else(|| syntax("empty SHOW query"))?;
            classify(s, query)
        } else if word_is(&t0, "create")
            && let Some(ct) = table_as_with_column_names(&mut p)?
        {
            let s = limits.check_depth(SqlStatement::CreateTable(ct))?;
            let text = s.to_string();
            classify(s, text)
        } else {
            let mut s = limits.check_depth(p.parse_statement().map_err(parser_error)?)?;
            // sqlparser takes a bare SHOW; PostgreSQL names a variable
            // (and datafusion-postgres indexes the first one).
            if matches!(&s, SqlStatement::ShowVariable { variable } if variable.is_empty()) {
                return Err(EngineError::Syntax(
                    "SHOW needs a parameter name (SHOW ALL lists them)".into(),
                ));
            }
            if let Some(message) = columnless_subquery(&s) {
                return Err(EngineError::Syntax(message));
            }
            let text = cut.text(&p);
            // A client catalog query DataFusion cannot plan as written
            // runs as rewritten.
            let json_casts = super::jsonb::rewrite_casts(&mut s);
            let json_casts = super::functions::rewrite_substring(&mut s) | json_casts;
            let text = if text.trim().is_empty() || super::pg_compat::rewrite(&mut s) || json_casts
            {
                s.to_string()
            } else {
                text
            };
            if let Some(message) = super::windows::invalid_call(&s) {
                return Err(EngineError::Invalid(message));
            }
            classify(s, text)
        };
        let found: Vec<&Emit> = if emits.is_empty() {
            vec![]
        } else {
            // (Offsets found from the start again: only texts with EMIT
            // pay for it.)
            let begin = cut.slicer.offset(start);
            let end = cut.slicer.offset(p.peek_token().span.start);
            emits
                .iter()
                .filter(|(at, _)| (begin..end).contains(at))
                .map(|(_, e)| e)
                .collect()
        };
        let stmt = ksql::apply(stmt, found)?;
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

/// PostgreSQL's `CREATE [TEMP] TABLE [IF NOT EXISTS] t (a, b) AS query`,
/// whose column list (names without types, renaming the query's first
/// columns) sqlparser does not read; None (nothing consumed) for any other
/// statement.
fn table_as_with_column_names(
    p: &mut Parser<'_>,
) -> Result<Option<datafusion::sql::sqlparser::ast::CreateTable>> {
    use datafusion::sql::sqlparser::ast::{ColumnDef, DataType as SqlType};
    // The shape, peeked: CREATE [TEMP|TEMPORARY] TABLE [IF NOT EXISTS]
    // name(.name)* ( word (, word)* ) AS.
    let at = |n: usize| p.peek_nth_token(n).token;
    let mut n = 1;
    let temporary = word_is(&at(n), "temp") || word_is(&at(n), "temporary");
    if temporary {
        n += 1;
    }
    if !word_is(&at(n), "table") {
        return Ok(None);
    }
    n += 1;
    let if_not_exists =
        word_is(&at(n), "if") && word_is(&at(n + 1), "not") && word_is(&at(n + 2), "exists");
    if if_not_exists {
        n += 3;
    }
    while matches!(at(n), Token::Word(_)) && at(n + 1) == Token::Period {
        n += 2;
    }
    if !matches!(at(n), Token::Word(_)) || at(n + 1) != Token::LParen {
        return Ok(None);
    }
    n += 2;
    loop {
        if !matches!(at(n), Token::Word(_)) {
            return Ok(None);
        }
        match at(n + 1) {
            Token::Comma => n += 2,
            Token::RParen => break,
            _ => return Ok(None),
        }
    }
    if !word_is(&at(n + 2), "as") {
        return Ok(None);
    }
    // Read, now that it is one.
    p.next_token();
    if temporary {
        p.next_token();
    }
    p.next_token();
    if if_not_exists {
        let _ = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    }
    let name = p.parse_object_name(false).map_err(syntax)?;
    p.expect_token(&Token::LParen).map_err(syntax)?;
    let columns = p
        .parse_comma_separated(|p| p.parse_identifier())
        .map_err(syntax)?
        .into_iter()
        .map(|name| ColumnDef {
            name,
            data_type: SqlType::Unspecified,
            options: vec![],
        })
        .collect();
    p.expect_token(&Token::RParen).map_err(syntax)?;
    p.expect_keyword(Keyword::AS).map_err(syntax)?;
    let query = p.parse_query().map_err(parser_error)?;
    Ok(Some(
        datafusion::sql::sqlparser::ast::helpers::stmt_create_table::CreateTableBuilder::new(name)
            .temporary(temporary)
            .if_not_exists(if_not_exists)
            .columns(columns)
            .query(Some(query))
            .build(),
    ))
}

/// Where the statement being parsed starts in the query string, to cut
/// its text out when its end is reached.
struct Cut<'s, 'a> {
    slicer: &'s mut Slicer<'a>,
    start: datafusion::sql::sqlparser::tokenizer::Location,
}

impl Cut<'_, '_> {
    /// The statement's text up to the parser's position.
    fn text(&mut self, p: &Parser<'_>) -> String {
        let end = p.peek_token().span.start;
        self.slicer.slice(self.start, end)
    }
}

/// A scalar subquery that selects no columns (`(SELECT FROM u)`):
/// PostgreSQL refuses it (42601); DataFusion's planner indexes its first
/// column and panics.
fn columnless_subquery(s: &SqlStatement) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{Expr, SetExpr, visit_expressions};
    let mut found = None;
    let _ = visit_expressions(s, |e| {
        let (query, message) = match e {
            Expr::Subquery(q) => (q, "subquery must return only one column"),
            Expr::InSubquery { subquery, .. } => (subquery, "subquery has too few columns"),
            _ => return std::ops::ControlFlow::Continue(()),
        };
        if let SetExpr::Select(select) = query.body.as_ref()
            && select.projection.is_empty()
        {
            found = Some(message.to_string());
            return std::ops::ControlFlow::Break(());
        }
        std::ops::ControlFlow::Continue(())
    });
    found
}

/// The rest of `SUBSCRIBE [TO] name|(query) [WITH (SNAPSHOT = bool)]`.
fn subscribe(p: &mut Parser<'_>) -> Result<Statement> {
    let _ = p.parse_keyword(Keyword::TO);
    let (name, query) = if p.consume_token(&Token::LParen) {
        let mut q = p.parse_query().map_err(parser_error)?;
        p.expect_token(&Token::RParen).map_err(syntax)?;
        super::jsonb::rewrite_casts(&mut q);
        (String::new(), Some(q))
    } else {
        (relation_name(p)?, None)
    };
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
    Ok(Statement::Subscribe {
        name,
        query,
        snapshot,
    })
}

/// Statement texts cut out of a query string by sqlparser's locations
/// (1-based line and column, in characters). Statements come in order, so
/// the position is carried forward from one statement to the next: cutting
/// every statement of a long query string is linear in its length, not
/// quadratic (200,000 statements on one line took 30 s before).
struct Slicer<'a> {
    sql: &'a str,
    /// Where the last location was found: (line, column, byte offset).
    at: (u64, u64, usize),
}

impl<'a> Slicer<'a> {
    fn new(sql: &'a str) -> Slicer<'a> {
        Slicer { sql, at: (1, 1, 0) }
    }

    /// The byte offset of `loc` (the end of the text if it is past it).
    fn offset(&mut self, loc: datafusion::sql::sqlparser::tokenizer::Location) -> usize {
        if loc.line == 0 {
            return self.sql.len();
        }
        if (loc.line, loc.column) < (self.at.0, self.at.1) {
            self.at = (1, 1, 0);
        }
        let (mut line, mut col, start) = self.at;
        for (i, ch) in self.sql[start..].char_indices() {
            if line == loc.line && col == loc.column {
                self.at = (line, col, start + i);
                return start + i;
            }
            if ch == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        self.sql.len()
    }

    /// The statement text between two locations, without its `;`.
    fn slice(
        &mut self,
        start: datafusion::sql::sqlparser::tokenizer::Location,
        end: datafusion::sql::sqlparser::tokenizer::Location,
    ) -> String {
        let (a, b) = (self.offset(start), self.offset(end));
        self.sql
            .get(a..b.max(a))
            .unwrap_or("")
            .trim()
            .trim_end_matches(';')
            .trim()
            .to_string()
    }
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
            Statement::Ddl(Ddl::CreateTopic { name, options, .. }) => {
                assert_eq!(name, "t");
                assert_eq!(options["partitions"], "3");
                assert_eq!(options["retention.ms"], "1000");
            }
            other => panic!("{other:?}"),
        }
        match &s[1] {
            Statement::Ddl(Ddl::CreateStream {
                columns,
                options,
                sql,
                ..
            }) => {
                assert_eq!(columns.len(), 2);
                assert_eq!(options["kafka_topic"], "t");
                assert!(sql.starts_with("CREATE STREAM s"), "{sql}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&s[2], Statement::Query(_, t) if t == "SELECT 1"));
        assert!(matches!(
            &s[3],
            Statement::Ddl(Ddl::Drop {
                if_exists: true,
                ..
            })
        ));
        assert!(
            matches!(&s[4], Statement::Query(_, q) if q.contains("eddy_catalog.topics")),
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
