//! eddy's statements around sqlparser (the version DataFusion re-exports):
//! `CREATE TOPIC`, `CREATE STREAM` (with eddy's, ksqlDB's and Materialize's
//! option spellings), `DROP TOPIC|STREAM`, `SHOW …`. Everything else is a
//! sqlparser statement, kept with its text.

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

/// A CREATE STREAM's column list, with ksqlDB's `KEY` (and `PRIMARY
/// KEY`) after a column's type marking a column held in the record key.
fn stream_columns(p: &mut Parser<'_>) -> Result<(Vec<ColumnDef>, Vec<String>)> {
    p.expect_token(&Token::LParen).map_err(syntax)?;
    let (mut columns, mut keys) = (Vec::new(), Vec::new());
    if p.consume_token(&Token::RParen) {
        return Ok((columns, keys));
    }
    loop {
        let name = p.parse_identifier().map_err(syntax)?;
        let data_type = data_type(p)?;
        let primary = p.parse_keyword(Keyword::PRIMARY);
        if p.parse_keyword(Keyword::KEY) {
            keys.push(super::names::ident(&name));
        } else if primary {
            return Err(syntax("expected KEY after PRIMARY"));
        }
        columns.push(ColumnDef {
            name,
            data_type,
            options: vec![],
        });
        if p.consume_token(&Token::RParen) {
            return Ok((columns, keys));
        }
        p.expect_token(&Token::Comma).map_err(syntax)?;
    }
}

/// The topic ksqlDB names after a relation: its name as ksqlDB folds it
/// (unquoted identifiers upper-cased, quoted ones as written).
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
            p.next_token();
            let is_topic = word_is(&p.next_token().token, "topic");
            let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
            let name = p.parse_object_name(false).map_err(syntax)?;
            if is_topic {
                let name = topic_name(&name);
                let opts = options(p.parse_options(Keyword::WITH).map_err(syntax)?)?;
                Statement::Ddl(Ddl::CreateTopic {
                    name,
                    options: opts,
                    if_not_exists,
                })
            } else if p.peek_token().token == Token::LParen {
                let spelled = name;
                let name = super::names::object(&spelled);
                let (columns, keys) = stream_columns(&mut p)?;
                let opts = options(p.parse_options(Keyword::WITH).map_err(syntax)?)?;
                let end = p.peek_token().span.start;
                Statement::Ddl(Ddl::CreateStream {
                    name,
                    columns,
                    keys,
                    options: opts,
                    if_not_exists,
                    sql: slicer.slice(start, end),
                })
            } else if p.peek_keyword(Keyword::WITH)
                && !matches!(
                    p.peek_nth_token(p_with_end(&p)).token,
                    Token::Word(ref w) if w.keyword == Keyword::AS
                )
            {
                // No columns and no query: an Avro stream whose columns
                // are its registered schema's fields.
                let opts = options(p.parse_options(Keyword::WITH).map_err(syntax)?)?;
                let end = p.peek_token().span.start;
                Statement::Ddl(Ddl::CreateStream {
                    name: super::names::object(&name),
                    columns: vec![],
                    keys: vec![],
                    options: opts,
                    if_not_exists,
                    sql: slicer.slice(start, end),
                })
            } else {
                // ksqlDB's CREATE STREAM … [WITH (…)] AS SELECT ….
                let opts = options(p.parse_options(Keyword::WITH).map_err(syntax)?)?;
                p.expect_keyword(Keyword::AS).map_err(syntax)?;
                let query = match limits
                    .check_depth(SqlStatement::Query(p.parse_query().map_err(parser_error)?))?
                {
                    SqlStatement::Query(q) => q,
                    _ => unreachable!("a query stays a query"),
                };
                let end = p.peek_token().span.start;
                Statement::Ddl(Ddl::CreatePersistent(Box::new(Persistent {
                    table: false,
                    name: super::names::object(&name),
                    topic: ksql_topic(&name),
                    options: opts,
                    query,
                    if_not_exists,
                    sql: slicer.slice(start, end),
                    partition_by: None,
                    window: None,
                    insert: false,
                    within: None,
                })))
            }
        } else if word_is(&t0, "create")
            && (word_is(&t1, "source")
                || (word_is(&t1, "materialized") && word_is(&p.peek_nth_token(2).token, "source")))
        {
            p.next_token();
            if word_is(&p.next_token().token, "materialized") {
                p.next_token();
            }
            let stmt = source(&mut p)?;
            let end = p.peek_token().span.start;
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
                    sql: slicer.slice(start, end),
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
            let ddl = create_index(&mut p, default)?;
            let end = p.peek_token().span.start;
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
                    sql: slicer.slice(start, end),
                }),
                other => Statement::Ddl(other),
            }
        } else if word_is(&t0, "create") && word_is(&t1, "connection") {
            p.next_token();
            p.next_token();
            let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
            let name = relation_name(&mut p)?;
            let broker = connection(&mut p)?;
            let end = p.peek_token().span.start;
            Statement::Ddl(Ddl::CreateConnection {
                name,
                broker,
                if_not_exists,
                sql: slicer.slice(start, end),
            })
        } else if word_is(&t0, "create") && word_is(&t1, "sink") {
            p.next_token();
            p.next_token();
            let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
            let name = relation_name(&mut p)?;
            p.expect_keyword(Keyword::FROM).map_err(syntax)?;
            let from = relation_name(&mut p)?;
            let mut avro = false;
            let topic = if p.parse_keyword(Keyword::INTO) {
                let t = p.next_token().token;
                if word_is(&t, "kafka") {
                    // Materialize's INTO KAFKA CONNECTION c (TOPIC 't').
                    if !word_is(&p.next_token().token, "connection") {
                        return Err(syntax("expected INTO KAFKA CONNECTION name (TOPIC '…')"));
                    }
                    relation_name(&mut p)?;
                    p.expect_token(&Token::LParen).map_err(syntax)?;
                    let mut topic = None;
                    let mut depth = 1;
                    while depth > 0 {
                        let t = p.next_token().token;
                        match &t {
                            Token::LParen => depth += 1,
                            Token::RParen => depth -= 1,
                            Token::EOF => return Err(syntax("unclosed parenthesis")),
                            t if depth == 1 && word_is(t, "topic") && topic.is_none() => {
                                let _ = p.consume_token(&Token::Eq);
                                topic = Some(p.parse_literal_string().map_err(syntax)?);
                            }
                            _ => {}
                        }
                    }
                    topic.ok_or_else(|| {
                        syntax("expected (TOPIC 'name') after INTO KAFKA CONNECTION …")
                    })?
                } else if word_is(&t, "topic") {
                    p.parse_literal_string().map_err(syntax)?
                } else {
                    return Err(syntax("expected INTO TOPIC 'name'"));
                }
            } else if p.peek_keyword(Keyword::WITH) {
                let mut opts = options(p.parse_options(Keyword::WITH).map_err(syntax)?)?;
                avro = opts
                    .remove("format")
                    .is_some_and(|f| f.eq_ignore_ascii_case("avro"));
                opts.remove("topic")
                    .ok_or_else(|| syntax("CREATE SINK … WITH (…) needs topic = 'name'"))?
            } else {
                return Err(syntax(
                    "expected INTO TOPIC 'name' after CREATE SINK … FROM …",
                ));
            };
            // Materialize's KEY (cols), FORMAT …, ENVELOPE …, each optional.
            let mut key = None;
            let mut upsert = false;
            loop {
                let t = p.peek_token().token;
                if word_is(&t, "key") {
                    p.next_token();
                    p.expect_token(&Token::LParen).map_err(syntax)?;
                    let cols = p
                        .parse_comma_separated(|p| p.parse_identifier())
                        .map_err(syntax)?;
                    p.expect_token(&Token::RParen).map_err(syntax)?;
                    if word_is(&p.peek_token().token, "not") {
                        // NOT ENFORCED.
                        p.next_token();
                        p.next_token();
                    }
                    key = Some(cols.iter().map(super::names::ident).collect::<Vec<_>>());
                } else if word_is(&t, "format") {
                    p.next_token();
                    let (f, _) = source_format(&mut p)?;
                    match f {
                        "avro" => avro = true,
                        "text" | "json" => avro = false,
                        other => {
                            return Err(EngineError::Unsupported(format!(
                                "sink format {} (sinks write JSON or AVRO)",
                                other.to_ascii_uppercase()
                            )));
                        }
                    }
                } else if word_is(&t, "envelope") {
                    p.next_token();
                    let e = p.next_token().token;
                    if word_is(&e, "upsert") {
                        upsert = true;
                    } else if !word_is(&e, "debezium") {
                        return Err(EngineError::Unsupported(format!(
                            "ENVELOPE {e} for a sink (DEBEZIUM or UPSERT)"
                        )));
                    }
                } else if p.peek_keyword(Keyword::WITH) {
                    let _ = dotted_options(&mut p)?;
                } else {
                    break;
                }
            }
            let upsert_key = match (upsert, key) {
                (true, Some(k)) => Some(k),
                (true, None) => {
                    return Err(syntax("ENVELOPE UPSERT needs KEY (columns)"));
                }
                (false, _) => None,
            };
            let end = p.peek_token().span.start;
            Statement::Ddl(Ddl::CreateSink {
                name,
                from,
                topic,
                avro,
                upsert_key,
                if_not_exists,
                sql: slicer.slice(start, end),
            })
        } else if word_is(&t0, "drop")
            && ["topic", "stream", "sink", "source", "connection"]
                .iter()
                .any(|w| word_is(&t1, w))
        {
            p.next_token();
            let kind = match &p.next_token().token {
                t if word_is(t, "topic") => DropKind::Topic,
                t if word_is(t, "sink") => DropKind::Sink,
                t if word_is(t, "source") => DropKind::Source,
                t if word_is(t, "connection") => DropKind::Connection,
                _ => DropKind::Stream,
            };
            let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let names = p
                .parse_comma_separated(|p| p.parse_object_name(false))
                .map_err(syntax)?
                .iter()
                .map(|n| match kind {
                    DropKind::Topic => topic_name(n),
                    _ => super::names::object(n),
                })
                .collect();
            let cascade = p.parse_one_of_keywords(&[Keyword::CASCADE, Keyword::RESTRICT])
                == Some(Keyword::CASCADE);
            Statement::Ddl(Ddl::Drop {
                kind,
                names,
                if_exists,
                cascade,
                delete_topic: false,
            })
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
            p.next_token();
            p.next_token();
            let name = topic_name(&p.parse_object_name(false).map_err(syntax)?);
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
            Statement::Ddl(Ddl::AlterTopic { name, set, reset })
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
            // DESCRIBE relation (ksqlDB, MySQL): its columns, typed as
            // PostgreSQL names them (DataFusion's own prints Arrow's).
            p.next_token();
            let name = relation_name(&mut p)?;
            let query = format!(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
                 WHERE table_name = '{}' ORDER BY ordinal_position",
                name.replace('\'', "''")
            );
            let mut s = Parser::parse_sql(&dialect, &query).map_err(syntax)?;
            let mut s = s.pop().ok_or_else(|| syntax("empty DESCRIBE query"))?;
            super::pg_compat::rewrite(&mut s);
            let text = s.to_string();
            classify(s, text)
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
            let end = p.peek_token().span.start;
            let text = slicer.slice(start, end);
            // A client catalog query DataFusion cannot plan as written
            // runs as rewritten.
            let json_casts = super::jsonb::rewrite_casts(&mut s);
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
        let mut found: Vec<&Emit> = if emits.is_empty() {
            vec![]
        } else {
            // (Offsets found from the start again: only texts with EMIT
            // pay for it.)
            let begin = slicer.offset(start);
            let end = slicer.offset(p.peek_token().span.start);
            emits
                .iter()
                .filter(|(at, _)| (begin..end).contains(at))
                .map(|(_, e)| e)
                .collect()
        };
        let mut stmt = stmt;
        if let Some(pos) = found.iter().position(|e| matches!(e, Emit::Window(_))) {
            let Emit::Window(w) = found.remove(pos) else {
                unreachable!("found a window")
            };
            let emit_final = found.iter().any(|e| matches!(e, Emit::Final));
            found.retain(|e| !matches!(e, Emit::Final));
            stmt = with_window(stmt, w, emit_final)?;
        }
        if let Some(pos) = found.iter().position(|e| matches!(e, Emit::Within { .. })) {
            let Emit::Within {
                before,
                after,
                grace,
            } = found.remove(pos)
            else {
                unreachable!("found a WITHIN")
            };
            let join_window = super::ksql_windows::join_window(before, after, grace.as_deref())?;
            if let Statement::Ddl(Ddl::CreatePersistent(p)) = &mut stmt {
                p.within = Some(join_window);
            }
            let query = match &mut stmt {
                Statement::Query(s, _) => match s.as_mut() {
                    SqlStatement::Query(q) => Some(q.as_mut()),
                    _ => None,
                },
                Statement::Ddl(Ddl::CreatePersistent(p)) => Some(p.query.as_mut()),
                _ => None,
            };
            let Some(query) = query else {
                return Err(syntax("WITHIN outside a SELECT's JOIN"));
            };
            super::ksql_windows::within(query, before, after)?;
            if let Statement::Query(s, text) = &mut stmt {
                *text = s.to_string();
            }
        }
        if let Some(pos) = found
            .iter()
            .position(|e| matches!(e, Emit::Watermark { .. }))
        {
            let Emit::Watermark { column, delay_us } = found.remove(pos) else {
                unreachable!("found a watermark")
            };
            stmt = match stmt {
                Statement::Ddl(Ddl::CreateStream {
                    name,
                    columns,
                    keys,
                    mut options,
                    if_not_exists,
                    sql,
                }) => {
                    options.insert(WATERMARK_OPTION.into(), format!("{delay_us} {column}"));
                    Statement::Ddl(Ddl::CreateStream {
                        name,
                        columns,
                        keys,
                        options,
                        if_not_exists,
                        sql,
                    })
                }
                _ => {
                    return Err(EngineError::Unsupported(
                        "WATERMARK FOR outside CREATE SOURCE or CREATE STREAM (tables have no \
                         event time)"
                            .into(),
                    ));
                }
            };
        }
        if let Some(pos) = found.iter().position(|e| matches!(e, Emit::OnWindowClose)) {
            found.remove(pos);
            stmt = match stmt {
                Statement::Ddl(Ddl::CreateView(mut v, text, _)) if v.materialized => {
                    on_window_close(&mut v.query);
                    let close = crate::dataflow::aggregate::WindowClose {
                        emit_final: true,
                        ..Default::default()
                    };
                    Statement::Ddl(Ddl::CreateView(v, text, Some(close)))
                }
                _ => {
                    return Err(EngineError::Unsupported(
                        "EMIT ON WINDOW CLOSE outside CREATE MATERIALIZED VIEW".into(),
                    ));
                }
            };
        }
        if let Some(pos) = found.iter().position(|e| matches!(e, Emit::PartitionBy(_))) {
            let Emit::PartitionBy(column) = found.remove(pos) else {
                unreachable!("found a PARTITION BY")
            };
            stmt = match stmt {
                Statement::Ddl(Ddl::CreatePersistent(mut p)) if !p.table => {
                    p.partition_by = Some(column.clone());
                    Statement::Ddl(Ddl::CreatePersistent(p))
                }
                _ => {
                    return Err(EngineError::Unsupported(
                        "PARTITION BY outside CREATE STREAM … AS SELECT".into(),
                    ));
                }
            };
        }
        let stmt = match found.first() {
            Some(Emit::Changes) => emit_changes(stmt)?,
            Some(Emit::DeleteTopic) => match stmt {
                Statement::Ddl(Ddl::Drop {
                    kind: kind @ (DropKind::Stream | DropKind::Table | DropKind::Source),
                    names,
                    if_exists,
                    cascade,
                    ..
                }) => Statement::Ddl(Ddl::Drop {
                    kind,
                    names,
                    if_exists,
                    cascade,
                    delete_topic: true,
                }),
                _ => return Err(syntax("DELETE TOPIC closes a DROP STREAM or DROP TABLE")),
            },
            Some(Emit::Final) => {
                return Err(EngineError::Unsupported(
                    "EMIT FINAL outside a windowed CREATE TABLE … AS SELECT (a window's rows once \
                     it closes); EMIT CHANGES gives every update"
                        .into(),
                ));
            }
            Some(
                Emit::Window(_)
                | Emit::Within { .. }
                | Emit::PartitionBy(_)
                | Emit::OnWindowClose
                | Emit::Watermark { .. },
            )
            | None => stmt,
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

/// A text with ksqlDB's clauses blanked out (None: it had none) and each
/// clause with its byte offset.
type Blanked = (Option<String>, Vec<(usize, Emit)>);

/// ksqlDB's clauses sqlparser does not know.
#[derive(Debug, Clone)]
enum Emit {
    Changes,
    Final,
    /// `DROP STREAM|TABLE … DELETE TOPIC`.
    DeleteTopic,
    /// `WINDOW TUMBLING|HOPPING (…)` after FROM.
    Window(super::ksql_windows::Window),
    /// ksqlDB's `WITHIN before[, after] [GRACE PERIOD g]` of a
    /// stream-stream join.
    Within {
        before: String,
        after: String,
        grace: Option<String>,
    },
    /// RisingWave's `EMIT ON WINDOW CLOSE` closing a CREATE MATERIALIZED
    /// VIEW.
    OnWindowClose,
    /// `WATERMARK FOR column AS column - INTERVAL …` in a column list.
    Watermark {
        column: String,
        delay_us: i64,
    },
    /// `PARTITION BY column` closing a CREATE STREAM … AS SELECT.
    PartitionBy(String),
}

/// ksqlDB's `EMIT CHANGES` / `EMIT FINAL` closing a statement, which
/// sqlparser does not know: `sql` with them blanked out (spaces, so every
/// location stays where it was) and where each was (byte offsets). None
/// when the text has none.
fn blank_emits(sql: &str) -> Result<Blanked> {
    use datafusion::sql::sqlparser::tokenizer::Tokenizer;
    let has = |word: &[u8]| {
        sql.as_bytes()
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
    };
    // (Most texts have none of these words and are not tokenized twice.)
    if !(has(b"emit")
        || has(b"window")
        || has(b"within")
        || has(b"partition")
        || has(b"watermark")
        || (has(b"delete") && has(b"topic")))
    {
        return Ok((None, vec![]));
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(syntax)?;
    let mut slicer = Slicer::new(sql);
    let mut text = sql.to_string();
    let mut emits = Vec::new();
    let words: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    // PARTITION BY column, outside parentheses (an OVER (PARTITION BY …)
    // is SQL), before EMIT, `;` or the end.
    let mut depth = 0i32;
    let mut at_depth = Vec::with_capacity(words.len());
    for &w in &words {
        at_depth.push(depth);
        match tokens[w].token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
    }
    for (n, &w) in words.iter().enumerate() {
        let (Some(&by), Some(&column)) = (words.get(n + 1), words.get(n + 2)) else {
            break;
        };
        let ends = words.get(n + 3).is_none_or(|&e| {
            matches!(tokens[e].token, Token::SemiColon) || word_is(&tokens[e].token, "emit")
        });
        if at_depth[n] != 0
            || !word_is(&tokens[w].token, "partition")
            || !word_is(&tokens[by].token, "by")
            || !ends
        {
            continue;
        }
        let Token::Word(word) = &tokens[column].token else {
            continue;
        };
        let name = super::names::ident(&datafusion::sql::sqlparser::ast::Ident {
            value: word.value.clone(),
            quote_style: word.quote_style,
            span: datafusion::sql::sqlparser::tokenizer::Span::empty(),
        });
        let from = slicer.offset(tokens[w].span.start);
        let to = slicer.offset(tokens[column].span.end);
        text.replace_range(from..to, &" ".repeat(to - from));
        emits.push((from, Emit::PartitionBy(name)));
    }
    // WINDOW TUMBLING|HOPPING|SESSION ( … ), up to its closing paren.
    for (n, &w) in words.iter().enumerate() {
        let (Some(&kind), Some(&open)) = (words.get(n + 1), words.get(n + 2)) else {
            break;
        };
        if !word_is(&tokens[w].token, "window")
            || !["tumbling", "hopping", "session"]
                .iter()
                .any(|k| word_is(&tokens[kind].token, k))
            || tokens[open].token != Token::LParen
        {
            continue;
        }
        let mut depth = 0;
        let close = (open..tokens.len()).find(|&i| {
            match tokens[i].token {
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                _ => {}
            }
            depth == 0
        });
        let Some(close) = close else {
            return Err(syntax("WINDOW (… without its closing )"));
        };
        let inside_from = slicer.offset(tokens[open].span.end);
        let inside_to = slicer.offset(tokens[close].span.start);
        let window = super::ksql_windows::parse(
            &tokens[kind].token.to_string(),
            &sql[inside_from..inside_to],
        )?;
        let from = slicer.offset(tokens[w].span.start);
        let to = slicer.offset(tokens[close].span.end);
        text.replace_range(from..to, &" ".repeat(to - from));
        emits.push((from, Emit::Window(window)));
    }
    // RisingWave's and Flink's `WATERMARK FOR col AS col - INTERVAL …` in a
    // column list, with the comma before it.
    for (n, &w) in words.iter().enumerate() {
        let (Some(&f), Some(&col), Some(&as_)) =
            (words.get(n + 1), words.get(n + 2), words.get(n + 3))
        else {
            break;
        };
        if at_depth[n] != 1
            || !word_is(&tokens[w].token, "watermark")
            || !word_is(&tokens[f].token, "for")
            || !word_is(&tokens[as_].token, "as")
        {
            continue;
        }
        let Token::Word(column) = &tokens[col].token else {
            continue;
        };
        // The expression runs to the comma or parenthesis closing it.
        let mut depth = 0;
        let end = words[n + 4..].iter().position(|&i| {
            match tokens[i].token {
                Token::LParen => depth += 1,
                Token::RParen if depth == 0 => return true,
                Token::RParen => depth -= 1,
                Token::Comma if depth == 0 => return true,
                _ => {}
            }
            false
        });
        let Some(end) = end.map(|e| words[n + 4 + e]) else {
            return Err(syntax("WATERMARK FOR … AS … without its closing )"));
        };
        let expr_from = slicer.offset(tokens[words[n + 3]].span.end);
        let expr_to = slicer.offset(tokens[end].span.start);
        let column = super::names::ident(&datafusion::sql::sqlparser::ast::Ident {
            value: column.value.clone(),
            quote_style: column.quote_style,
            span: datafusion::sql::sqlparser::tokenizer::Span::empty(),
        });
        let delay_us = watermark_delay(&column, &sql[expr_from..expr_to])?;
        let comma = n
            .checked_sub(1)
            .map(|b| words[b])
            .filter(|&b| tokens[b].token == Token::Comma);
        let from = slicer.offset(tokens[comma.unwrap_or(w)].span.start);
        text.replace_range(from..expr_to, &" ".repeat(expr_to - from));
        emits.push((from, Emit::Watermark { column, delay_us }));
    }
    // ksqlDB's stream-stream join window: `JOIN s WITHIN 1 HOUR ON …`, or
    // `WITHIN (1 HOUR, 2 HOURS)` (before, after), with an optional GRACE
    // PERIOD, just before ON.
    for (n, &w) in words.iter().enumerate() {
        if !word_is(&tokens[w].token, "within") {
            continue;
        }
        let len_at = |i: usize| -> Option<String> {
            let (Some(&a), Some(&b)) = (words.get(i), words.get(i + 1)) else {
                return None;
            };
            match (&tokens[a].token, &tokens[b].token) {
                (Token::Number(v, _), Token::Word(unit)) => Some(format!("{v} {}", unit.value)),
                _ => None,
            }
        };
        let (before, after, mut next) =
            if tokens[words.get(n + 1).copied().unwrap_or(w)].token == Token::LParen {
                let (Some(b), Some(a)) = (len_at(n + 2), len_at(n + 5)) else {
                    continue;
                };
                if words
                    .get(n + 4)
                    .is_none_or(|&c| tokens[c].token != Token::Comma)
                    || words
                        .get(n + 7)
                        .is_none_or(|&c| tokens[c].token != Token::RParen)
                {
                    continue;
                }
                (b, a, n + 8)
            } else {
                let Some(l) = len_at(n + 1) else {
                    continue;
                };
                (l.clone(), l, n + 3)
            };
        let mut grace = None;
        if words
            .get(next)
            .is_some_and(|&g| word_is(&tokens[g].token, "grace"))
            && words
                .get(next + 1)
                .is_some_and(|&p| word_is(&tokens[p].token, "period"))
            && len_at(next + 2).is_some()
        {
            grace = len_at(next + 2);
            next += 4;
        }
        let Some(&on) = words.get(next) else {
            continue;
        };
        if !word_is(&tokens[on].token, "on") {
            continue;
        }
        let from = slicer.offset(tokens[w].span.start);
        let to = slicer.offset(tokens[words[next - 1]].span.end);
        text.replace_range(from..to, &" ".repeat(to - from));
        emits.push((
            from,
            Emit::Within {
                before,
                after,
                grace,
            },
        ));
    }
    // RisingWave's EMIT ON WINDOW CLOSE, closing a statement.
    for (n, &w) in words.iter().enumerate() {
        let four: Vec<usize> = words[n..].iter().take(4).copied().collect();
        if four.len() < 4
            || !["emit", "on", "window", "close"]
                .iter()
                .zip(&four)
                .all(|(want, &i)| word_is(&tokens[i].token, want))
            || !words
                .get(n + 4)
                .is_none_or(|&e| matches!(tokens[e].token, Token::SemiColon | Token::EOF))
        {
            continue;
        }
        let from = slicer.offset(tokens[w].span.start);
        let to = slicer.offset(tokens[four[3]].span.end);
        text.replace_range(from..to, &" ".repeat(to - from));
        emits.push((from, Emit::OnWindowClose));
    }
    for w in words.windows(3).map(|w| (w[0], w[1], Some(w[2]))).chain(
        words
            .len()
            .checked_sub(2)
            .map(|i| (words[i], words[i + 1], None)),
    ) {
        let (e, what, next) = w;
        let (kind, first) = match &tokens[what].token {
            t if word_is(t, "changes") => (Emit::Changes, "emit"),
            t if word_is(t, "final") => (Emit::Final, "emit"),
            t if word_is(t, "topic") => (Emit::DeleteTopic, "delete"),
            _ => continue,
        };
        if !word_is(&tokens[e].token, first)
            || !next.is_none_or(|n| matches!(tokens[n].token, Token::SemiColon | Token::EOF))
        {
            continue;
        }
        let from = slicer.offset(tokens[e].span.start);
        let to = slicer.offset(tokens[what].span.end);
        text.replace_range(from..to, &" ".repeat(to - from));
        emits.push((from, kind));
    }
    Ok(((!emits.is_empty()).then_some(text), emits))
}

/// The `WITH` option a stream's watermark rides in from the parse to
/// CREATE: `"<delay µs> <column>"`.
pub const WATERMARK_OPTION: &str = "eddy.watermark";

/// EMIT ON WINDOW CLOSE groups by the window's end (RisingWave's queries
/// group by `window_start`; the end closes it).
fn on_window_close(q: &mut Query) {
    use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, GroupByExpr, Ident, SetExpr};
    let SetExpr::Select(select) = q.body.as_mut() else {
        return;
    };
    let GroupByExpr::Expressions(exprs, _) = &mut select.group_by else {
        return;
    };
    let named = |exprs: &[SqlExpr], w: &str| {
        exprs.iter().any(|e| match e {
            SqlExpr::Identifier(i) => i.value.eq_ignore_ascii_case(w),
            SqlExpr::CompoundIdentifier(p) => {
                p.last().is_some_and(|i| i.value.eq_ignore_ascii_case(w))
            }
            _ => false,
        })
    };
    if named(exprs, "window_start") && !named(exprs, "window_end") {
        exprs.push(SqlExpr::Identifier(Ident::new("window_end")));
    }
}

/// A watermark's delay (microseconds) from its expression: `col`, or
/// `col - INTERVAL '5' SECOND` (any interval literal of fixed length).
fn watermark_delay(column: &str, expr: &str) -> Result<i64> {
    use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr as SqlExpr};
    let bad = || {
        EngineError::Unsupported(format!(
            "WATERMARK FOR {column} AS {} (the column, or the column minus an interval)",
            expr.trim()
        ))
    };
    let parsed = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(expr)
        .and_then(|mut p| p.parse_expr())
        .map_err(|_| bad())?;
    let is_column =
        |e: &SqlExpr| matches!(e, SqlExpr::Identifier(i) if super::names::ident(i) == column);
    match &parsed {
        e if is_column(e) => Ok(0),
        SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::Minus,
            right,
        } if is_column(left) => {
            let SqlExpr::Interval(i) = right.as_ref() else {
                return Err(bad());
            };
            let value = match i.value.as_ref() {
                SqlExpr::Value(v) => match &v.value {
                    datafusion::sql::sqlparser::ast::Value::SingleQuotedString(s) => s.clone(),
                    other => other.to_string(),
                },
                _ => return Err(bad()),
            };
            let text = match &i.leading_field {
                Some(unit) => format!("{value} {unit}"),
                None => value,
            };
            let iv = crate::types::input::parse_interval(&text)
                .filter(|iv| iv.months == 0)
                .ok_or_else(bad)?;
            Ok(i64::from(iv.days)
                .saturating_mul(86_400_000_000)
                .saturating_add(iv.nanoseconds / 1000))
        }
        _ => Err(bad()),
    }
}

/// A statement with ksqlDB's WINDOW clause: its query rewritten onto the
/// window (`ksql_windows.rs`).
fn with_window(
    stmt: Statement,
    w: &super::ksql_windows::Window,
    emit_final: bool,
) -> Result<Statement> {
    use super::ksql_windows::apply;
    if w.session && matches!(stmt, Statement::Query(..)) {
        return Err(EngineError::Unsupported(
            "WINDOW SESSION in a query that runs once: sessions are kept by a push query \
             (… EMIT CHANGES) or a persistent one (CREATE TABLE … AS SELECT)"
                .into(),
        ));
    }
    if emit_final
        && !matches!(&stmt, Statement::Ddl(Ddl::CreatePersistent(p)) if p.table)
        && !matches!(&stmt, Statement::Ddl(Ddl::CreateTable(ct, _)) if ct.query.is_some())
    {
        return Err(EngineError::Unsupported(
            "EMIT FINAL outside CREATE TABLE … AS SELECT … WINDOW (a push query's EMIT FINAL)"
                .into(),
        ));
    }
    match stmt {
        Statement::Query(mut s, _) => {
            let SqlStatement::Query(q) = s.as_mut() else {
                return Err(syntax("a WINDOW clause outside a SELECT"));
            };
            apply(q, w, false)?;
            let text = s.to_string();
            Ok(Statement::Query(s, text))
        }
        Statement::Ddl(Ddl::CreatePersistent(mut p)) => {
            apply(&mut p.query, w, p.table)?;
            p.window = Some(w.close(emit_final)?);
            Ok(Statement::Ddl(Ddl::CreatePersistent(p)))
        }
        // A windowed CREATE TABLE … AS SELECT is ksqlDB's: a persistent
        // query.
        Statement::Ddl(Ddl::CreateTable(ct, text)) if ct.query.is_some() => {
            let mut p = persistent_table(&ct, &text)?;
            apply(&mut p.query, w, true)?;
            p.window = Some(w.close(emit_final)?);
            Ok(Statement::Ddl(Ddl::CreatePersistent(Box::new(p))))
        }
        _ => Err(syntax("a WINDOW clause outside a SELECT")),
    }
}

/// A statement that closed with EMIT CHANGES: a query is a push query (a
/// SUBSCRIBE to it: its rows, then their changes as they happen); a
/// persistent query emits changes anyway.
fn emit_changes(stmt: Statement) -> Result<Statement> {
    match stmt {
        Statement::Query(s, _) => match *s {
            SqlStatement::Query(q) => Ok(Statement::Subscribe {
                name: String::new(),
                query: Some(q),
                snapshot: true,
            }),
            other => Err(syntax(format!("EMIT CHANGES after {other}"))),
        },
        s @ Statement::Ddl(Ddl::CreatePersistent(_)) => Ok(s),
        // ksqlDB's INSERT INTO s SELECT … EMIT CHANGES: a persistent query
        // into stream s.
        Statement::Dml(Dml::Insert(s)) => {
            let sql = s.to_string();
            let SqlStatement::Insert(ins) = *s else {
                return Err(syntax("EMIT CHANGES after an INSERT that is not"));
            };
            let Some(query) = ins.source.filter(|q| {
                !matches!(
                    q.body.as_ref(),
                    datafusion::sql::sqlparser::ast::SetExpr::Values(_)
                )
            }) else {
                return Err(syntax(
                    "EMIT CHANGES closes an INSERT INTO … SELECT, not VALUES",
                ));
            };
            if !ins.columns.is_empty() {
                return Err(EngineError::Unsupported(
                    "a column list in INSERT INTO … SELECT … EMIT CHANGES (the SELECT names the \
                     stream's columns)"
                        .into(),
                ));
            }
            let datafusion::sql::sqlparser::ast::TableObject::TableName(target) = &ins.table else {
                return Err(syntax("INSERT INTO a table function"));
            };
            Ok(Statement::Ddl(Ddl::CreatePersistent(Box::new(
                Persistent {
                    table: false,
                    name: super::names::object(target),
                    topic: String::new(),
                    options: BTreeMap::new(),
                    query,
                    if_not_exists: false,
                    sql,
                    partition_by: None,
                    window: None,
                    insert: true,
                    within: None,
                },
            ))))
        }
        Statement::Ddl(Ddl::CreateTable(ct, text)) if ct.query.is_some() => {
            Ok(Statement::Ddl(Ddl::CreateTable(ct, text)))
        }
        _ => Err(syntax(
            "EMIT CHANGES closes a SELECT or a CREATE … AS SELECT",
        )),
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

/// The rest of `CREATE [DEFAULT] INDEX` after INDEX: `[IF NOT EXISTS]
/// [name] [IN CLUSTER c] ON relation [USING method] [(col, …)]
/// [WITH (…)]`. Columns are column names (an index on an expression is
/// refused).
fn create_index(p: &mut Parser<'_>, default: bool) -> Result<Ddl> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let in_cluster = |p: &mut Parser<'_>| -> Result<()> {
        if p.parse_keywords(&[Keyword::IN, Keyword::CLUSTER]) {
            p.parse_identifier().map_err(syntax)?;
        }
        Ok(())
    };
    in_cluster(p)?;
    let name = if default || p.peek_keyword(Keyword::ON) {
        None
    } else {
        Some(relation_name(p)?)
    };
    in_cluster(p)?;
    p.expect_keyword(Keyword::ON).map_err(syntax)?;
    let on = relation_name(p)?;
    if p.parse_keyword(Keyword::USING) {
        p.parse_identifier().map_err(syntax)?;
    }
    let columns = if !default && p.consume_token(&Token::LParen) {
        let exprs = p
            .parse_comma_separated(|p| p.parse_expr())
            .map_err(syntax)?;
        p.expect_token(&Token::RParen).map_err(syntax)?;
        let names = exprs
            .into_iter()
            .map(|e| match e {
                Expr::Identifier(i) => Ok(i.value),
                other => Err(EngineError::Unsupported(format!(
                    "an index on the expression {other} (index columns by name)"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        Some(names)
    } else if default {
        None
    } else {
        return Err(syntax(format!(
            "expected (columns) after CREATE INDEX … ON {on}; CREATE DEFAULT INDEX ON {on} indexes its key"
        )));
    };
    if p.peek_keyword(Keyword::WITH) {
        p.parse_options(Keyword::WITH).map_err(syntax)?;
    }
    Ok(Ddl::CreateIndex {
        name,
        on,
        columns,
        if_not_exists,
        sql: String::new(),
    })
}

/// `WITH (k = v, …)` where a key may be dotted (`properties.bootstrap.server`,
/// RisingWave's) or quoted; keys lower-cased.
fn dotted_options(p: &mut Parser<'_>) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if !p.parse_keyword(Keyword::WITH) {
        return Ok(out);
    }
    p.expect_token(&Token::LParen).map_err(syntax)?;
    loop {
        let mut key = Vec::new();
        loop {
            match p.next_token().token {
                Token::Word(w) => key.push(w.value),
                Token::SingleQuotedString(s) => key.push(s),
                other => return Err(syntax(format!("expected an option name, found {other}"))),
            }
            if !p.consume_token(&Token::Period) {
                break;
            }
        }
        // `SIZE = '1'` and `SIZE '1'` are both Materialize's.
        let _ = p.consume_token(&Token::Eq);
        let value = option_value(&p.parse_expr().map_err(syntax)?);
        out.insert(key.join(".").to_ascii_lowercase(), value);
        if !p.consume_token(&Token::Comma) {
            break;
        }
    }
    p.expect_token(&Token::RParen).map_err(syntax)?;
    Ok(out)
}

/// Skip a parenthesised list, nested parentheses included.
fn skip_parens(p: &mut Parser<'_>) -> Result<()> {
    p.expect_token(&Token::LParen).map_err(syntax)?;
    let mut depth = 1;
    while depth > 0 {
        match p.next_token().token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::EOF => return Err(syntax("unclosed parenthesis")),
            _ => {}
        }
    }
    Ok(())
}

/// The rest of Materialize's `CREATE CONNECTION name TO KAFKA (BROKER
/// 'host:port', …)`: the broker. Security options are read past: eddy's
/// sources read eddy's own log (see `source`).
fn connection(p: &mut Parser<'_>) -> Result<String> {
    if !p.parse_keyword(Keyword::TO) {
        return Err(syntax("expected TO after CREATE CONNECTION name"));
    }
    let to = p.next_token().token;
    if word_is(&to, "confluent") {
        // TO CONFLUENT SCHEMA REGISTRY (URL 'http://…'): eddy's sources
        // use eddy's own registry; the URL is kept as said.
        for w in ["schema", "registry"] {
            if !word_is(&p.next_token().token, w) {
                return Err(syntax("expected TO CONFLUENT SCHEMA REGISTRY (URL '…')"));
            }
        }
        p.expect_token(&Token::LParen).map_err(syntax)?;
        let mut url = None;
        let mut depth = 1;
        while depth > 0 {
            let t = p.next_token().token;
            match &t {
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                Token::EOF => return Err(syntax("unclosed parenthesis in CREATE CONNECTION")),
                t if depth == 1 && word_is(t, "url") => {
                    let _ = p.consume_token(&Token::Eq);
                    url = Some(p.parse_literal_string().map_err(syntax)?);
                }
                _ => {}
            }
        }
        let _ = dotted_options(p)?;
        return url.ok_or_else(|| {
            syntax("CREATE CONNECTION … TO CONFLUENT SCHEMA REGISTRY (…) needs URL '…'")
        });
    }
    if !word_is(&to, "kafka") {
        return Err(EngineError::Unsupported(
            "CREATE CONNECTION other than TO KAFKA (…) or TO CONFLUENT SCHEMA REGISTRY (…)".into(),
        ));
    }
    p.expect_token(&Token::LParen).map_err(syntax)?;
    let mut broker = None;
    let mut depth = 1;
    while depth > 0 {
        let t = p.next_token().token;
        match &t {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::EOF => return Err(syntax("unclosed parenthesis in CREATE CONNECTION")),
            t if depth == 1 && (word_is(t, "broker") || word_is(t, "brokers")) => {
                let _ = p.consume_token(&Token::Eq);
                let _ = p.consume_token(&Token::LParen);
                broker = Some(p.parse_literal_string().map_err(syntax)?);
            }
            _ => {}
        }
    }
    // `WITH (VALIDATE = false)`.
    let _ = dotted_options(p)?;
    broker.ok_or_else(|| syntax("CREATE CONNECTION … TO KAFKA (…) needs BROKER 'host:port'"))
}

/// A value format of Materialize (`FORMAT BYTES|TEXT|JSON|CSV WITH n
/// COLUMNS`) or RisingWave (`FORMAT PLAIN ENCODE JSON|CSV|BYTES`, `ROW
/// FORMAT JSON`): eddy's format and, for Materialize's, the columns it
/// gives a source (`data bytea`, `text text`, `data jsonb`,
/// `column1 … columnN text`).
fn source_format(p: &mut Parser<'_>) -> Result<(&'static str, Option<String>)> {
    let word = |p: &mut Parser<'_>| match p.next_token().token {
        Token::Word(w) => Ok(w.value.to_ascii_lowercase()),
        other => Err(syntax(format!("expected a format, found {other}"))),
    };
    let mut name = word(p)?;
    if matches!(name.as_str(), "plain" | "upsert" | "debezium") {
        let envelope = name;
        if envelope != "plain" {
            return Err(EngineError::Unsupported(format!(
                "FORMAT {} (eddy's sources are FORMAT PLAIN)",
                envelope.to_ascii_uppercase()
            )));
        }
        if !word_is(&p.next_token().token, "encode") {
            return Err(syntax("expected ENCODE after FORMAT PLAIN"));
        }
        let encode = word(p)?;
        if p.peek_token().token == Token::LParen {
            skip_parens(p)?;
        }
        return match encode.as_str() {
            "json" => Ok(("json", None)),
            "csv" => Ok(("csv", None)),
            "bytes" => Ok(("bytes", None)),
            // (schema.registry = 'http://…'): eddy's own registry.
            "avro" => Ok(("avro", None)),
            other => Err(unsupported_format(other)),
        };
    }
    if name == "row" {
        name = word(p)?;
        if name == "format" {
            name = word(p)?;
        }
        return match name.as_str() {
            "json" => Ok(("json", None)),
            "csv" => Ok(("csv", None)),
            other => Err(unsupported_format(other)),
        };
    }
    match name.as_str() {
        "avro" => {
            // USING CONFLUENT SCHEMA REGISTRY CONNECTION c | 'url': the
            // registry is eddy's own, which the connection names.
            if p.parse_keyword(Keyword::USING) {
                for w in ["confluent", "schema", "registry"] {
                    if !word_is(&p.next_token().token, w) {
                        return Err(syntax(
                            "expected USING CONFLUENT SCHEMA REGISTRY after FORMAT AVRO",
                        ));
                    }
                }
                if word_is(&p.peek_token().token, "connection") {
                    p.next_token();
                    relation_name(p)?;
                } else {
                    p.parse_literal_string().map_err(syntax)?;
                }
                // SEED … and the like: read past.
                while word_is(&p.peek_token().token, "seed") {
                    p.next_token();
                    while !matches!(p.peek_token().token, Token::EOF | Token::SemiColon)
                        && !word_is(&p.peek_token().token, "envelope")
                    {
                        p.next_token();
                    }
                }
            }
            Ok(("avro", None))
        }
        "bytes" => Ok(("bytes", Some("(data bytea)".into()))),
        "text" => Ok(("text", Some("(text text)".into()))),
        "json" => Ok(("text", Some("(data jsonb)".into()))),
        "csv" => {
            p.expect_keyword(Keyword::WITH).map_err(syntax)?;
            let n: usize = match p.next_token().token {
                Token::Number(n, _) => n.parse().map_err(syntax)?,
                t if word_is(&t, "header") => {
                    return Err(EngineError::Unsupported(
                        "FORMAT CSV WITH HEADER (use CSV WITH n COLUMNS)".into(),
                    ));
                }
                other => return Err(syntax(format!("expected a column count, found {other}"))),
            };
            if !word_is(&p.next_token().token, "columns") {
                return Err(syntax("expected COLUMNS after CSV WITH n"));
            }
            if n == 0 {
                return Err(syntax("CSV WITH 0 COLUMNS"));
            }
            let cols: Vec<String> = (1..=n).map(|i| format!("column{i} text")).collect();
            Ok(("csv", Some(format!("({})", cols.join(", ")))))
        }
        other => Err(unsupported_format(other)),
    }
}

fn unsupported_format(name: &str) -> EngineError {
    EngineError::Unsupported(format!(
        "source format {} (formats: BYTES, TEXT, JSON, CSV, AVRO)",
        name.to_ascii_uppercase()
    ))
}

/// The rest of `CREATE [MATERIALIZED] SOURCE [IF NOT EXISTS] name …` in
/// Materialize's spellings (`FROM KAFKA CONNECTION c (TOPIC 't') FORMAT
/// …`, the older `FROM KAFKA BROKER 'b' TOPIC 't' … FORMAT …`) and
/// RisingWave's (`(columns) WITH (connector = 'kafka', topic = 't', …)
/// FORMAT PLAIN ENCODE …`): a stream over the topic in eddy's own log
/// (created if missing), as `CREATE STREAM` makes. The broker named is
/// not dialled: eddy is the broker (reading another cluster is issue 23's).
fn source(p: &mut Parser<'_>) -> Result<Ddl> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = relation_name(p)?;
    let mut options = BTreeMap::new();
    let mut columns = None;
    if p.peek_token().token == Token::LParen || p.peek_keyword(Keyword::WITH) {
        // RisingWave: columns (none for Avro: the registry's schema has
        // them), WITH (connector = 'kafka', topic = …).
        if p.peek_token().token == Token::LParen {
            columns = Some(p.parse_columns().map_err(syntax)?.0);
        }
        let with = dotted_options(p)?;
        match with.get("connector").map(String::as_str) {
            Some("kafka") => {}
            Some(other) => {
                return Err(EngineError::Unsupported(format!(
                    "connector '{other}' (eddy's sources read Kafka topics)"
                )));
            }
            None => return Err(syntax("CREATE SOURCE … WITH (…) needs connector = 'kafka'")),
        }
        let topic = with
            .get("topic")
            .cloned()
            .ok_or_else(|| syntax("CREATE SOURCE … WITH (…) needs topic = 'name'"))?;
        options.insert("topic".to_string(), topic);
    } else {
        if p.parse_keyword(Keyword::IN) {
            // IN CLUSTER c: eddy has one.
            let _ = p.next_token();
            let _ = p.parse_identifier().map_err(syntax)?;
        }
        p.expect_keyword(Keyword::FROM).map_err(syntax)?;
        if !word_is(&p.next_token().token, "kafka") {
            return Err(EngineError::Unsupported(
                "sources other than FROM KAFKA".into(),
            ));
        }
        let topic = if word_is(&p.peek_token().token, "connection") {
            p.next_token();
            let connection = relation_name(p)?;
            options.insert("connection".to_string(), connection);
            p.expect_token(&Token::LParen).map_err(syntax)?;
            let mut topic = None;
            loop {
                if word_is(&p.peek_token().token, "topic") {
                    p.next_token();
                    let _ = p.consume_token(&Token::Eq);
                    topic = Some(p.parse_literal_string().map_err(syntax)?);
                } else {
                    // START OFFSET (…), GROUP ID PREFIX '…', …: read past.
                    let mut depth = 0;
                    loop {
                        match p.peek_token().token {
                            Token::Comma | Token::RParen if depth == 0 => break,
                            Token::LParen => depth += 1,
                            Token::RParen => depth -= 1,
                            Token::EOF => return Err(syntax("unclosed parenthesis")),
                            _ => {}
                        }
                        p.next_token();
                    }
                }
                if !p.consume_token(&Token::Comma) {
                    break;
                }
            }
            p.expect_token(&Token::RParen).map_err(syntax)?;
            topic.ok_or_else(|| syntax("expected (TOPIC 'name') after FROM KAFKA CONNECTION …"))?
        } else {
            if !word_is(&p.next_token().token, "broker") {
                return Err(syntax("expected CONNECTION or BROKER after FROM KAFKA"));
            }
            let _ = p.parse_literal_string().map_err(syntax)?;
            if !word_is(&p.next_token().token, "topic") {
                return Err(syntax("expected TOPIC 'name' after FROM KAFKA BROKER '…'"));
            }
            p.parse_literal_string().map_err(syntax)?
        };
        options.insert("topic".to_string(), topic);
    }
    // The clauses after FROM, in Materialize's order (each optional).
    let mut format = None;
    loop {
        let t = p.peek_token().token;
        if word_is(&t, "format") {
            p.next_token();
            format = Some(source_format(p)?);
        } else if word_is(&t, "row") {
            format = Some(source_format(p)?);
        } else if word_is(&t, "key") || word_is(&t, "value") {
            let is_key = word_is(&p.next_token().token, "key");
            if !word_is(&p.next_token().token, "format") {
                return Err(syntax("expected FORMAT after KEY/VALUE"));
            }
            let f = source_format(p)?;
            if !is_key {
                format = Some(f);
            }
        } else if word_is(&t, "include") {
            return Err(EngineError::Unsupported(
                "INCLUDE in CREATE SOURCE (declare a stream with the pseudo-columns _key, _partition, _offset, _timestamp instead)".into(),
            ));
        } else if word_is(&t, "envelope") {
            p.next_token();
            let envelope = p.next_token().token;
            if !word_is(&envelope, "none") {
                return Err(EngineError::Unsupported(format!(
                    "ENVELOPE {envelope} (a keyed table over a topic is CREATE TABLE … PRIMARY KEY … WITH (topic = '…'))"
                )));
            }
        } else if word_is(&t, "expose") {
            // EXPOSE PROGRESS AS name.
            p.next_token();
            p.next_token();
            p.expect_keyword(Keyword::AS).map_err(syntax)?;
            let _ = p.parse_object_name(false).map_err(syntax)?;
        } else if p.peek_keyword(Keyword::WITH) {
            // Materialize's WITH (SIZE = …): nothing for eddy.
            let _ = dotted_options(p)?;
        } else {
            break;
        }
    }
    let (format, implied) = format.ok_or_else(|| syntax("CREATE SOURCE needs a FORMAT"))?;
    let columns = match (columns, implied) {
        (Some(c), _) => c,
        (None, Some(implied)) => {
            let dialect = PostgreSqlDialect {};
            Parser::new(&dialect)
                .try_with_sql(&implied)
                .and_then(|mut q| q.parse_columns())
                .map_err(syntax)?
                .0
        }
        // Avro: the columns are the registered schema's fields.
        (None, None) if format == "avro" => vec![],
        (None, None) => {
            return Err(syntax(
                "CREATE SOURCE … FORMAT PLAIN ENCODE … needs its columns",
            ));
        }
    };
    options.insert("format".to_string(), format.to_string());
    // Answered CREATE SOURCE, as Materialize answers it.
    options.insert("source".to_string(), "true".to_string());
    Ok(Ddl::CreateStream {
        name,
        columns,
        keys: vec![],
        options,
        if_not_exists,
        sql: String::new(),
    })
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

/// Parse a SQL type name (as stored in the catalog).
pub fn parse_type(s: &str) -> Result<SqlType> {
    let dialect = PostgreSqlDialect {};
    let mut p = Parser::new(&dialect).try_with_sql(s).map_err(syntax)?;
    data_type(&mut p)
}

/// A column type: sqlparser's, and the ksqlDB types PostgreSQL's dialect
/// does not read: `STRUCT<name type, …>`, `MAP<key, value>` (also as
/// sqlparser prints it back, `Map(key, value)`), `ARRAY<…>` of them, and
/// `BYTES` (bytea).
fn data_type(p: &mut Parser<'_>) -> Result<SqlType> {
    let mut pending = 0;
    let t = nested_type(p, &mut pending)?;
    if pending > 0 {
        return Err(syntax("unbalanced > in a type"));
    }
    Ok(t)
}

/// `pending`: closing `>` already consumed as part of a `>>` token.
fn nested_type(p: &mut Parser<'_>, pending: &mut u32) -> Result<SqlType> {
    use datafusion::sql::sqlparser::ast::{ArrayElemTypeDef, StructBracketKind, StructField};
    let close = |p: &mut Parser<'_>, pending: &mut u32| -> Result<()> {
        if *pending > 0 {
            *pending -= 1;
            return Ok(());
        }
        match p.next_token().token {
            Token::Gt => Ok(()),
            Token::ShiftRight => {
                *pending += 1;
                Ok(())
            }
            other => Err(syntax(format!("expected > in a type, found {other}"))),
        }
    };
    let t = p.peek_token().token;
    let next = p.peek_nth_token(1).token;
    if word_is(&t, "struct") && next == Token::Lt {
        p.next_token();
        p.next_token();
        let mut fields = Vec::new();
        loop {
            let name = p.parse_identifier().map_err(syntax)?;
            let field_type = nested_type(p, pending)?;
            fields.push(StructField {
                field_name: Some(name),
                field_type,
                options: None,
            });
            if *pending == 0 && p.consume_token(&Token::Comma) {
                continue;
            }
            close(p, pending)?;
            return Ok(SqlType::Struct(fields, StructBracketKind::AngleBrackets));
        }
    }
    if word_is(&t, "map") && matches!(next, Token::Lt | Token::LParen) {
        p.next_token();
        let angle = p.next_token().token == Token::Lt;
        let key = nested_type(p, pending)?;
        p.expect_token(&Token::Comma).map_err(syntax)?;
        let value = nested_type(p, pending)?;
        if angle {
            close(p, pending)?;
        } else {
            p.expect_token(&Token::RParen).map_err(syntax)?;
        }
        return Ok(SqlType::Map(Box::new(key), Box::new(value)));
    }
    if word_is(&t, "array") && next == Token::Lt {
        p.next_token();
        p.next_token();
        let inner = nested_type(p, pending)?;
        close(p, pending)?;
        return Ok(SqlType::Array(ArrayElemTypeDef::AngleBracket(Box::new(
            inner,
        ))));
    }
    if word_is(&t, "bytes") {
        p.next_token();
        return Ok(SqlType::Bytea);
    }
    p.parse_data_type().map_err(syntax)
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
