//! Differential test of materialized views against plain SELECTs: a view
//! must always hold what its query returns, whether it was created before
//! the data arrived or after, and must fail with the same error when the
//! query fails.
//!
//! Every `query` record of eddy's `slt/*.slt` files and of the peer suites
//! the `peer_*` tests run (`tests/peer/risingwave/`,
//! `tests/peer/sqlite/select1.test`) is taken through a fresh
//! server per file, with the file's statement records run in order before
//! it, as the runners do. For each query record that is a SELECT the same
//! SQL also becomes materialized views:
//!
//! - at the record (`CREATE MATERIALIZED VIEW dv_N AS <sql>` right after
//!   the plain SELECT): the view must return the same rows (as a multiset;
//!   a top-level ORDER BY does not order a view) or the same error
//!   (SQLSTATE), either refusing the CREATE with it or returning it from
//!   `SELECT * FROM dv_N`;
//! - before the data: before each INSERT/UPDATE/DELETE/COPY statement of
//!   the file, every later query record whose relations exist already
//!   becomes `ev_N`, so it is maintained through the DML that follows; it
//!   is compared when its record is reached;
//! - again at the end of the file (or before a DROP/ALTER, which would
//!   need the harness views out of the way), every view made so far is
//!   compared with its SELECT run again.
//!
//! A query a view refuses with SQLSTATE 0A000 (not maintainable
//! incrementally) is counted as such, not a failure; so is one refused with
//! 42701 for result columns of one name, which PostgreSQL refuses in a
//! view too. Query records that
//! cannot be views are skipped and counted by reason: not a single SELECT,
//! reading system tables (`eddy_catalog`, `pg_catalog`,
//! `information_schema`), calling a function whose result is not a
//! function of the data (`now()`, `random()`, `mz_now()`, …), or guarded by
//! `skipif postgresql` / `onlyif <other>`. Floats compare to 1e-9
//! relative (a view sums in another order).
//!
//! Prints files, queries compared, agreements, skips by reason and every
//! disagreement with its file and line; any disagreement fails the test.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TestServer;
use common::slt::connect;
use datafusion::sql::sqlparser::ast::{
    Expr, ObjectName, SetExpr, Statement, Visit, Visitor, visit_expressions, visit_relations,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use sqllogictest::{Condition, DefaultColumnType, Record, StatementExpect};
use tokio_postgres::SimpleQueryMessage;

/// How long one statement may take before the file is given up on.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Functions whose result is not a function of the data.
const NON_DETERMINISTIC: &[&str] = &[
    "now",
    "current_timestamp",
    "current_date",
    "current_time",
    "localtime",
    "localtimestamp",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "timeofday",
    "random",
    "setseed",
    "uuid",
    "gen_random_uuid",
    "mz_now",
    "version",
    "current_user",
    "session_user",
    "user",
    "current_role",
    "current_schema",
    "current_schemas",
    "current_database",
    "current_catalog",
];

const SYSTEM_SCHEMAS: &[&str] = &["eddy_catalog", "pg_catalog", "information_schema"];

fn files() -> Vec<PathBuf> {
    // A reproduction: just these files (colon-separated).
    if let Ok(list) = std::env::var("EDDY_DIFFERENTIAL_FILES") {
        return list.split(':').map(PathBuf::from).collect();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["slt", "tests/differential"] {
        let mut own: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "slt"))
            .collect();
        own.sort();
        out.extend(own);
    }
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if p.is_dir() {
                walk(&p, out);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".slt") || n.ends_with(".slt.part"))
            {
                out.push(p);
            }
        }
    }
    let peers = root.join("tests/peer");
    walk(&peers.join("risingwave"), &mut out);
    let select1 = peers.join("sqlite/select1.test");
    assert!(select1.exists(), "peer file {} missing", select1.display());
    out.push(select1);
    out
}

// ----------------------------------------------------- classification --

/// Why a query record cannot be a view, or None.
fn unfit(sql: &str) -> Option<&'static str> {
    let Ok(stmts) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return Some("does not parse (sqlparser, PostgreSQL dialect)");
    };
    let [Statement::Query(q)] = stmts.as_slice() else {
        return Some("not a single SELECT");
    };
    if matches!(q.body.as_ref(), SetExpr::Insert(_) | SetExpr::Update(_)) {
        return Some("not a single SELECT");
    }
    let mut system = false;
    let _ = visit_relations(&stmts, |name: &ObjectName| {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| p.to_string().to_lowercase())
            .collect();
        if parts.iter().any(|p| SYSTEM_SCHEMAS.contains(&p.as_str()))
            || parts.last().is_some_and(|p| p.starts_with("pg_"))
        {
            system = true;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    if system {
        return Some("reads system tables");
    }
    let mut volatile = false;
    let _ = visit_expressions(&stmts, |e: &Expr| {
        if let Expr::Function(f) = e {
            let name = f.name.to_string().to_lowercase();
            let base = name.rsplit('.').next().unwrap_or(&name);
            if NON_DETERMINISTIC.contains(&base) || base.starts_with("pg_") {
                volatile = true;
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    // Table functions in FROM are relations, not expressions.
    struct Tf(bool);
    impl Visitor for Tf {
        type Break = ();
        fn pre_visit_table_factor(
            &mut self,
            t: &datafusion::sql::sqlparser::ast::TableFactor,
        ) -> std::ops::ControlFlow<()> {
            if let datafusion::sql::sqlparser::ast::TableFactor::Table {
                name,
                args: Some(_),
                ..
            } = t
            {
                let n = name.to_string().to_lowercase();
                if n.starts_with("pg_") || NON_DETERMINISTIC.contains(&n.as_str()) {
                    self.0 = true;
                }
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut tf = Tf(false);
    let _ = stmts.visit(&mut tf);
    if volatile || tf.0 {
        return Some("non-deterministic function");
    }
    None
}

/// The first keyword of a statement, upper case, after comments.
fn first_word(sql: &str) -> String {
    let mut s = sql.trim_start();
    while let Some(rest) = s.strip_prefix("--") {
        s = rest
            .split_once('\n')
            .map(|x| x.1)
            .unwrap_or("")
            .trim_start();
    }
    s.split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_uppercase()
}

fn is_dml(sql: &str) -> bool {
    matches!(
        first_word(sql).as_str(),
        "INSERT" | "UPDATE" | "DELETE" | "COPY"
    )
}

/// Statements that drop or replace objects a harness view may read.
fn is_drop_like(sql: &str) -> bool {
    let w = first_word(sql);
    let upper = sql.to_uppercase();
    matches!(w.as_str(), "DROP" | "ALTER" | "TRUNCATE")
        || (w == "CREATE" && upper.split_whitespace().nth(1) == Some("OR"))
}

// ------------------------------------------------------------ results --

/// What a statement gave: rows (each cell text or NULL) or a SQLSTATE.
#[derive(Debug, Clone)]
enum Outcome {
    /// The rows (each cell text or NULL) and the result's column names.
    Rows(Vec<Vec<Option<String>>>, Vec<String>),
    Error {
        code: String,
        message: String,
    },
    /// No SQLSTATE: the connection broke, or the statement timed out.
    Broken(String),
}

impl Outcome {
    fn code(&self) -> Option<&str> {
        match self {
            Outcome::Error { code, .. } => Some(code),
            _ => None,
        }
    }

    fn show(&self) -> String {
        match self {
            Outcome::Rows(r, names) => {
                let shown: Vec<String> = r
                    .iter()
                    .take(6)
                    .map(|row| {
                        row.iter()
                            .map(|c| c.as_deref().unwrap_or("NULL"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect();
                format!(
                    "({}) {} row(s) [{}{}]",
                    names.join(", "),
                    r.len(),
                    shown.join(" | "),
                    if r.len() > 6 { " | …" } else { "" }
                )
            }
            Outcome::Error { code, message } => format!("error {code}: {message}"),
            Outcome::Broken(m) => format!("no answer: {m}"),
        }
    }
}

/// `CREATE MATERIALIZED VIEW name AS sql`; when the query's result columns
/// share a name (refused with 42701, as PostgreSQL refuses it), again with
/// a column list naming them `c1`, `c2`, …: the view holds the same rows.
async fn create_view(c: &tokio_postgres::Client, name: &str, sql: &str) -> Outcome {
    let first = run(c, &format!("CREATE MATERIALIZED VIEW {name} AS {sql}")).await;
    match &first {
        Outcome::Error { code, .. } if code == "42701" => {
            let Ok(Ok(stmt)) = tokio::time::timeout(STATEMENT_TIMEOUT, c.prepare(sql)).await else {
                return first;
            };
            let columns: Vec<String> = (1..=stmt.columns().len())
                .map(|i| format!("c{i}"))
                .collect();
            let sql = format!(
                "CREATE MATERIALIZED VIEW {name} ({}) AS {sql}",
                columns.join(", ")
            );
            run(c, &sql).await
        }
        _ => first,
    }
}

async fn run(c: &tokio_postgres::Client, sql: &str) -> Outcome {
    match tokio::time::timeout(STATEMENT_TIMEOUT, c.simple_query(sql)).await {
        Err(_) => Outcome::Broken(format!("timed out after {STATEMENT_TIMEOUT:?}")),
        Ok(Err(e)) => match e.as_db_error() {
            // A panic under the dataflow lock: nothing that reads a table
            // or view works any more.
            Some(db) if db.message().contains("poisoned") => {
                Outcome::Broken(format!("{}: {}", db.code().code(), db.message()))
            }
            Some(db) => Outcome::Error {
                code: db.code().code().to_string(),
                message: db.message().to_string(),
            },
            None => Outcome::Broken(e.to_string()),
        },
        Ok(Ok(msgs)) => {
            let mut rows = Vec::new();
            let mut names = Vec::new();
            for m in msgs {
                match m {
                    SimpleQueryMessage::RowDescription(columns) => {
                        names = columns.iter().map(|c| c.name().to_string()).collect();
                    }
                    SimpleQueryMessage::Row(r) => {
                        rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
                    }
                    _ => {}
                }
            }
            Outcome::Rows(rows, names)
        }
    }
}

fn cell_eq(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) if a != b => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => {
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) || (x.is_nan() && y.is_nan())
            }
            _ => false,
        },
        _ => a == b,
    }
}

/// Whether two row sets are equal as multisets.
fn same_rows(a: &[Vec<Option<String>>], b: &[Vec<Option<String>>]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a.iter()
        .zip(&b)
        .all(|(x, y)| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| cell_eq(p, q)))
}

fn repeats(names: &[String]) -> bool {
    names
        .iter()
        .enumerate()
        .any(|(i, n)| names[..i].contains(n))
}

/// How a view's outcome relates to its SELECT's.
enum Verdict {
    Agree,
    Disagree(String),
}

fn judge(plain: &Outcome, view: &Outcome) -> Verdict {
    match (plain, view) {
        // A view has its query's column names, except where they repeat
        // (the view is then made with a column list, `create_view`).
        (Outcome::Rows(a, an), Outcome::Rows(b, bn))
            if same_rows(a, b) && (an == bn || repeats(an)) =>
        {
            Verdict::Agree
        }
        (Outcome::Error { code: a, .. }, Outcome::Error { code: b, .. }) if a == b => {
            Verdict::Agree
        }
        _ => Verdict::Disagree(format!(
            "plain SELECT: {}; view: {}",
            plain.show(),
            view.show()
        )),
    }
}

// ------------------------------------------------------------- tally --

#[derive(Default)]
struct Tally {
    files: usize,
    query_records: usize,
    compared_queries: usize,
    comparisons: BTreeMap<&'static str, (usize, usize)>,
    not_maintainable: usize,
    /// Views refused, as PostgreSQL refuses them, for column names that
    /// repeat (42701).
    repeated_names: usize,
    skipped: BTreeMap<String, usize>,
    statements: usize,
    statements_diverged: Vec<String>,
    /// (query SQL on one line, "file:line [when]: what differs").
    disagreements: Vec<(String, String)>,
}

impl Tally {
    fn skip(&mut self, why: &str) {
        *self.skipped.entry(why.to_string()).or_default() += 1;
    }

    fn record(&mut self, when: &'static str, at: &str, sql: &str, v: Verdict) {
        let e = self.comparisons.entry(when).or_default();
        match v {
            Verdict::Agree => e.0 += 1,
            Verdict::Disagree(d) => {
                e.1 += 1;
                self.disagreements
                    .push((one_line(sql), format!("{at} [{when}]: {d}")));
            }
        }
    }

    fn add(&mut self, o: Tally) {
        self.files += o.files;
        self.query_records += o.query_records;
        self.compared_queries += o.compared_queries;
        for (k, (a, d)) in o.comparisons {
            let e = self.comparisons.entry(k).or_default();
            e.0 += a;
            e.1 += d;
        }
        self.not_maintainable += o.not_maintainable;
        self.repeated_names += o.repeated_names;
        for (k, n) in o.skipped {
            *self.skipped.entry(k).or_default() += n;
        }
        self.statements += o.statements;
        self.statements_diverged.extend(o.statements_diverged);
        self.disagreements.extend(o.disagreements);
    }
}

fn one_line(sql: &str) -> String {
    let s: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

/// A view the harness made.
struct View {
    name: String,
    sql: String,
    /// file:line of its query record.
    at: String,
    /// Made before the data (at a DML point before its record).
    early: bool,
    /// The index of its query among the file's candidates.
    query: usize,
}

/// A query record that can be a view.
struct Candidate {
    sql: String,
    at: String,
    /// Its `ev_N` exists or was tried for good.
    early_done: bool,
    /// Its record has been reached.
    reached: bool,
}

fn skipped_by_condition(conditions: &[Condition]) -> Option<String> {
    for c in conditions {
        match c {
            Condition::SkipIf { label } if label == "postgresql" => {
                return Some("skipif postgresql".into());
            }
            Condition::OnlyIf { label } if label != "postgresql" => {
                return Some(format!("onlyif {label}"));
            }
            _ => {}
        }
    }
    None
}

fn strip_sql(sql: &str) -> String {
    sql.trim().trim_end_matches(';').trim().to_string()
}

/// The server stopped answering properly (a panic poisoned the dataflow
/// lock, a connection broke, a statement hung).
#[derive(Debug)]
struct Broken {
    /// Where: file:line, or the phase after the last record.
    at: String,
    what: String,
    /// The number of records run before it showed.
    records_run: usize,
    /// Whether it showed during the edge-row phase.
    in_edge_phase: bool,
    /// The SQL of every harness view made in the file so far.
    views: Vec<String>,
}

/// What one run over a file is given and keeps.
struct FileRun<'a> {
    label: &'a str,
    c: tokio_postgres::Client,
    tally: Tally,
    live: Vec<View>,
    cands: Vec<Candidate>,
    /// Every view SQL made so far (for isolating a panic).
    made: Vec<String>,
}

impl FileRun<'_> {
    fn broken(&self, at: String, what: String, records_run: usize, in_edge_phase: bool) -> Broken {
        let mut views = self.made.clone();
        views.dedup();
        Broken {
            at,
            what,
            records_run,
            in_edge_phase,
            views,
        }
    }

    /// Compare every live view with its SELECT again (as `when`), then drop
    /// them all if `drop`.
    async fn recheck(&mut self, when: &'static str, drop: bool) -> Result<(), (String, String)> {
        for v in &self.live {
            let plain = run(&self.c, &v.sql).await;
            let got = run(&self.c, &format!("SELECT * FROM {}", v.name)).await;
            for o in [&plain, &got] {
                if let Outcome::Broken(m) = o {
                    return Err((v.at.clone(), format!("re-check of {}: {m}", v.name)));
                }
            }
            let when = match (when, v.early) {
                ("later", true) => "made before the data, re-checked later",
                ("later", false) => "made at its record, re-checked later",
                (w, _) => w,
            };
            self.tally.record(when, &v.at, &v.sql, judge(&plain, &got));
        }
        if drop {
            for v in self.live.drain(..) {
                if let Outcome::Broken(m) =
                    run(&self.c, &format!("DROP MATERIALIZED VIEW {}", v.name)).await
                {
                    return Err((v.at, format!("DROP MATERIALIZED VIEW {}: {m}", v.name)));
                }
                // A query not reached yet may be made again before the data.
                if v.early && !self.cands[v.query].reached {
                    self.cands[v.query].early_done = false;
                }
            }
        }
        Ok(())
    }
}

/// An identifier as SQL: quoted only when it has to be.
fn ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Rows with edge values for every table and stream: all NULLs, and zeros
/// (0, '', false; NULL for other types). Returns the DELETEs that take
/// them out of the tables again, and the INSERTs that failed (a NULL
/// primary key, say) with their errors.
async fn insert_edge_rows(
    c: &tokio_postgres::Client,
) -> Result<(Vec<String>, Vec<String>), String> {
    use tokio_postgres::types::Type;
    let Outcome::Rows(rels, _) = run(
        c,
        "SELECT name, kind FROM eddy_catalog.relations WHERE kind IN ('table', 'stream') ORDER BY name",
    )
    .await
    else {
        return Err("cannot list relations".into());
    };
    let mut deletes = Vec::new();
    let mut refused = Vec::new();
    for r in rels {
        let (Some(name), Some(kind)) = (r[0].clone(), r[1].clone()) else {
            continue;
        };
        let table = ident(&name);
        let Ok(stmt) = c.prepare(&format!("SELECT * FROM {table}")).await else {
            continue;
        };
        let mut cols = Vec::new();
        let mut zeros = Vec::new();
        for col in stmt.columns() {
            if ["_key", "_partition", "_offset", "_timestamp"].contains(&col.name()) {
                continue;
            }
            cols.push(ident(col.name()));
            let t = col.type_();
            zeros.push(
                if [
                    Type::INT2,
                    Type::INT4,
                    Type::INT8,
                    Type::FLOAT4,
                    Type::FLOAT8,
                    Type::NUMERIC,
                ]
                .contains(t)
                {
                    "0"
                } else if [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(t) {
                    "''"
                } else if *t == Type::BOOL {
                    "false"
                } else {
                    "NULL"
                },
            );
        }
        if cols.is_empty() {
            continue;
        }
        let nulls = vec!["NULL"; cols.len()];
        for values in [&nulls, &zeros] {
            let sql = format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                cols.join(", "),
                values.join(", ")
            );
            match run(c, &sql).await {
                Outcome::Broken(m) => return Err(format!("{sql}: {m}")),
                e @ Outcome::Error { .. } => {
                    refused.push(format!("{sql} — {}", e.show()));
                    continue;
                }
                Outcome::Rows(..) => {}
            }
            if kind == "table" {
                let conds: Vec<String> = cols
                    .iter()
                    .zip(values.iter())
                    .map(|(c, v)| {
                        if *v == "NULL" {
                            format!("{c} IS NULL")
                        } else {
                            format!("{c} = {v}")
                        }
                    })
                    .collect();
                deletes.push(format!("DELETE FROM {table} WHERE {}", conds.join(" AND ")));
            }
        }
    }
    Ok((deletes, refused))
}

/// Run one file's records, comparing views with their queries; queries
/// whose SQL is in `excluded` are not made into views.
async fn run_file(
    records: &[Record<DefaultColumnType>],
    label: &str,
    addr: std::net::SocketAddr,
    excluded: &[String],
) -> (Tally, Result<(), Broken>) {
    let mut f = FileRun {
        label,
        c: connect(addr).await,
        tally: Tally::default(),
        live: Vec::new(),
        cands: Vec::new(),
        made: Vec::new(),
    };
    let res = run_records(&mut f, records, excluded).await;
    (f.tally, res)
}

async fn run_records(
    f: &mut FileRun<'_>,
    records: &[Record<DefaultColumnType>],
    excluded: &[String],
) -> Result<(), Broken> {
    let label = f.label;
    // The candidates (query records that can be views), by record index.
    let mut cand_of: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        if let Record::Query {
            loc,
            sql,
            conditions,
            ..
        } = r
            && skipped_by_condition(conditions).is_none()
            && unfit(&strip_sql(sql)).is_none()
            && !excluded.contains(&strip_sql(sql))
        {
            cand_of.insert(i, f.cands.len());
            f.cands.push(Candidate {
                sql: strip_sql(sql),
                at: format!("{label}:{}", loc.line()),
                early_done: false,
                reached: false,
            });
        }
    }
    for (i, r) in records.iter().enumerate() {
        match r {
            Record::Statement {
                loc,
                sql,
                conditions,
                expected,
                ..
            } => {
                let at = format!("{label}:{}", loc.line());
                if let Some(why) = skipped_by_condition(conditions) {
                    f.tally.skip(&format!("statement: {why}"));
                    continue;
                }
                if is_drop_like(sql) {
                    f.recheck("later", true)
                        .await
                        .map_err(|(at, m)| f.broken(at, m, i, false))?;
                }
                if is_dml(sql) {
                    // Views of the queries to come, before this data.
                    let next: Vec<usize> = cand_of.range(i..).map(|(_, q)| *q).collect();
                    for q in next {
                        if f.cands[q].early_done {
                            continue;
                        }
                        let name = format!("ev_{q}");
                        f.made.push(f.cands[q].sql.clone());
                        match create_view(&f.c, &name, &f.cands[q].sql).await {
                            Outcome::Rows(..) => {
                                f.cands[q].early_done = true;
                                f.live.push(View {
                                    name,
                                    sql: f.cands[q].sql.clone(),
                                    at: f.cands[q].at.clone(),
                                    early: true,
                                    query: q,
                                });
                            }
                            // Its relations do not exist yet: try again
                            // before the next DML.
                            Outcome::Error { code, .. } if code == "42P01" => {}
                            Outcome::Error { .. } => f.cands[q].early_done = true,
                            Outcome::Broken(m) => {
                                let at = f.cands[q].at.clone();
                                return Err(f.broken(
                                    at,
                                    format!("CREATE MATERIALIZED VIEW {name}: {m}"),
                                    i,
                                    false,
                                ));
                            }
                        }
                    }
                }
                f.tally.statements += 1;
                let got = run(&f.c, sql).await;
                let want_ok = !matches!(expected, StatementExpect::Error(_));
                match &got {
                    Outcome::Broken(m) => {
                        return Err(f.broken(at, format!("{}: {m}", one_line(sql)), i + 1, false));
                    }
                    Outcome::Error { .. } if want_ok => f.tally.statements_diverged.push(format!(
                        "{at}: {} — {}",
                        one_line(sql),
                        got.show()
                    )),
                    Outcome::Rows(..) if !want_ok => f.tally.statements_diverged.push(format!(
                        "{at}: {} — succeeded, the file expects an error",
                        one_line(sql)
                    )),
                    _ => {}
                }
            }
            Record::Query {
                loc,
                sql,
                conditions,
                ..
            } => {
                f.tally.query_records += 1;
                let at = format!("{label}:{}", loc.line());
                if let Some(why) = skipped_by_condition(conditions) {
                    f.tally.skip(&why);
                    continue;
                }
                let sql = strip_sql(sql);
                let plain = run(&f.c, &sql).await;
                if let Outcome::Broken(m) = &plain {
                    return Err(f.broken(at, format!("{}: {m}", one_line(&sql)), i, false));
                }
                let Some(&q) = cand_of.get(&i) else {
                    let why = match unfit(&sql) {
                        Some(why) => why,
                        None if excluded.contains(&sql) => {
                            "excluded: its view broke the server (reported)"
                        }
                        None => "not a SELECT",
                    };
                    f.tally.skip(why);
                    continue;
                };
                f.cands[q].reached = true;
                f.tally.compared_queries += 1;
                // The view made before the data.
                if let Some(v) = f.live.iter().find(|v| v.early && v.query == q) {
                    let got = run(&f.c, &format!("SELECT * FROM {}", v.name)).await;
                    if let Outcome::Broken(m) = &got {
                        let what = format!("SELECT * FROM {}: {m}", v.name);
                        return Err(f.broken(at, what, i, false));
                    }
                    f.tally
                        .record("made before the data", &at, &sql, judge(&plain, &got));
                }
                // The view made now.
                let name = format!("dv_{q}");
                f.made.push(sql.clone());
                let created = create_view(&f.c, &name, &sql).await;
                match (&created, plain.code()) {
                    (Outcome::Broken(m), _) => {
                        let what = format!("CREATE MATERIALIZED VIEW {name}: {m}");
                        return Err(f.broken(at, what, i + 1, false));
                    }
                    (Outcome::Error { code, .. }, plain_code)
                        if code == "0A000" && plain_code != Some("0A000") =>
                    {
                        f.tally.not_maintainable += 1;
                    }
                    // PostgreSQL refuses a view whose columns share a name
                    // (a SELECT may repeat one): eddy must too.
                    (Outcome::Error { code, .. }, plain_code)
                        if code == "42701" && plain_code != Some("42701") =>
                    {
                        f.tally.repeated_names += 1;
                    }
                    (Outcome::Error { .. }, _) => {
                        f.tally
                            .record("made at its record", &at, &sql, judge(&plain, &created));
                    }
                    (Outcome::Rows(..), _) => {
                        let got = run(&f.c, &format!("SELECT * FROM {name}")).await;
                        if let Outcome::Broken(m) = &got {
                            let what = format!("SELECT * FROM {name}: {m}");
                            return Err(f.broken(at, what, i + 1, false));
                        }
                        f.tally
                            .record("made at its record", &at, &sql, judge(&plain, &got));
                        f.live.push(View {
                            name,
                            sql: sql.clone(),
                            at,
                            early: false,
                            query: q,
                        });
                    }
                }
            }
            Record::Include { .. } => f.tally.skip("include record"),
            Record::System { .. } => f.tally.skip("system (shell) record"),
            Record::Let { .. } => f.tally.skip("let record"),
            _ => {}
        }
    }
    let n = records.len();
    let end = format!("{label}: end of file");
    f.recheck("later", false)
        .await
        .map_err(|(at, m)| f.broken(at, m, n, false))?;
    // Edge rows in every table and stream, then out of the tables again.
    let (deletes, refused) = insert_edge_rows(&f.c)
        .await
        .map_err(|m| f.broken(end.clone(), m, n, true))?;
    for r in refused {
        f.tally
            .statements_diverged
            .push(format!("{end}: edge row refused: {r}"));
    }
    f.recheck("after edge rows (NULLs, zeros) were inserted", false)
        .await
        .map_err(|(at, m)| f.broken(at, m, n, true))?;
    for d in &deletes {
        match run(&f.c, d).await {
            Outcome::Broken(m) => return Err(f.broken(end, format!("{d}: {m}"), n, true)),
            e @ Outcome::Error { .. } => f
                .tally
                .statements_diverged
                .push(format!("{end}: edge row DELETE failed: {d} — {}", e.show())),
            Outcome::Rows(..) => {}
        }
    }
    f.recheck("after the edge rows were deleted from tables", false)
        .await
        .map_err(|(at, m)| f.broken(at, m, n, true))
}

/// Whether making the views `views` over the first `records_run` records
/// of a file (each view as soon as its relations exist; the edge-row
/// phase too if `edge`) breaks a fresh server.
fn breaks(
    records: &[Record<DefaultColumnType>],
    records_run: usize,
    edge: bool,
    views: &[String],
) -> bool {
    let server = TestServer::start();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(breaks_on(server.pg_addr, records, records_run, edge, views))
}

async fn breaks_on(
    addr: std::net::SocketAddr,
    records: &[Record<DefaultColumnType>],
    records_run: usize,
    edge: bool,
    views: &[String],
) -> bool {
    let c = connect(addr).await;
    if !matches!(
        run(&c, "CREATE TABLE probe_t (x int)").await,
        Outcome::Rows(..)
    ) {
        return true;
    }
    let mut pending: Vec<&String> = views.iter().collect();
    let mut made: Vec<String> = Vec::new();
    let mut n = 0;
    async fn make(
        c: &tokio_postgres::Client,
        pending: &mut Vec<&String>,
        made: &mut Vec<String>,
        n: &mut usize,
    ) -> bool {
        let mut keep = Vec::new();
        for sql in pending.drain(..) {
            *n += 1;
            let name = format!("iso_{n}");
            match create_view(c, &name, sql).await {
                Outcome::Rows(..) => made.push(name),
                Outcome::Error { code, .. } if code == "42P01" => keep.push(sql),
                Outcome::Error { .. } => {}
                Outcome::Broken(_) => return false,
            }
        }
        *pending = keep;
        true
    }
    for r in &records[..records_run] {
        if let Record::Statement {
            sql, conditions, ..
        } = r
        {
            if skipped_by_condition(conditions).is_some() {
                continue;
            }
            if is_drop_like(sql) {
                for name in made.drain(..) {
                    let _ = run(&c, &format!("DROP MATERIALIZED VIEW {name}")).await;
                }
                pending = views.iter().collect();
            }
            if !make(&c, &mut pending, &mut made, &mut n).await {
                return true;
            }
            if let Outcome::Broken(_) = run(&c, sql).await {
                return true;
            }
        }
    }
    if !make(&c, &mut pending, &mut made, &mut n).await {
        return true;
    }
    if edge {
        match insert_edge_rows(&c).await {
            Err(_) => return true,
            Ok((deletes, _)) => {
                for d in deletes {
                    if let Outcome::Broken(_) = run(&c, &d).await {
                        return true;
                    }
                }
            }
        }
    }
    !matches!(run(&c, "SELECT * FROM probe_t").await, Outcome::Rows(..))
}

/// The one view among `b.views` that breaks a fresh server by itself, if
/// there is one.
fn isolate(records: &[Record<DefaultColumnType>], b: &Broken) -> Option<String> {
    let mut set = b.views.clone();
    if !breaks(records, b.records_run, b.in_edge_phase, &set) {
        return None;
    }
    while set.len() > 1 {
        let right = set.split_off(set.len() / 2);
        if breaks(records, b.records_run, b.in_edge_phase, &set) {
            continue;
        }
        if breaks(records, b.records_run, b.in_edge_phase, &right) {
            set = right;
            continue;
        }
        return None; // only together
    }
    set.pop()
}

/// Run a file; when a view breaks the server, find it, report it, and run
/// the file again without it.
fn run_file_isolating(path: &Path, label: &str) -> Tally {
    let mut tally = Tally {
        files: 1,
        ..Tally::default()
    };
    let records = match sqllogictest::parse_file::<DefaultColumnType>(path) {
        Ok(r) => r,
        Err(e) => {
            tally
                .disagreements
                .push((String::new(), format!("{label}: does not parse: {e}")));
            return tally;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut excluded: Vec<String> = Vec::new();
    loop {
        let server = TestServer::start();
        let (t, res) = rt.block_on(run_file(&records, label, server.pg_addr, &excluded));
        drop(server);
        let Err(b) = res else {
            tally.add(t);
            return tally;
        };
        eprintln!(
            "{label}: the server broke at {}: {}; isolating",
            b.at, b.what
        );
        match isolate(&records, &b) {
            Some(sql) if excluded.len() < 5 && !excluded.contains(&sql) => {
                tally.disagreements.push((
                    one_line(&sql),
                    format!(
                        "{label} [the view breaks the server (a panic under the dataflow lock)]: \
                         found when {} gave {}",
                        b.at,
                        one_line(&b.what)
                    ),
                ));
                excluded.push(sql);
            }
            other => {
                tally.add(t);
                let why = match &other {
                    Some(_) => "again after excluding the views found so far",
                    None => "no single view reproduces it",
                };
                tally.disagreements.push((
                    other.map(|sql| one_line(&sql)).unwrap_or_default(),
                    format!(
                        "{} [the server broke; rest of the file given up; {why}]: {}",
                        b.at,
                        one_line(&b.what)
                    ),
                ));
                return tally;
            }
        }
    }
}

#[test]
fn views_agree_with_their_queries() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut tally = Tally::default();
    let started = Instant::now();
    for path in files() {
        let label = path
            .strip_prefix(root)
            .or_else(|_| path.strip_prefix(root.join("..")))
            .unwrap_or(&path)
            .display()
            .to_string();
        let t0 = Instant::now();
        let t = run_file_isolating(&path, &label);
        eprintln!(
            "{label}: {} queries compared, {} disagreements ({:.1}s)",
            t.compared_queries,
            t.disagreements.len(),
            t0.elapsed().as_secs_f64()
        );
        tally.add(t);
    }
    let (agree, disagree) = tally
        .comparisons
        .values()
        .fold((0, 0), |(a, d), (x, y)| (a + x, d + y));
    eprintln!(
        "differential: {} files in {:.0}s; {} query records, {} compared as views; \
         {agree} comparisons agree, {disagree} disagree; {} not maintainable (0A000); \
         {} refused for repeated column names (42701, as PostgreSQL)",
        tally.files,
        started.elapsed().as_secs_f64(),
        tally.query_records,
        tally.compared_queries,
        tally.not_maintainable,
        tally.repeated_names,
    );
    for (when, (a, d)) in &tally.comparisons {
        eprintln!("  {when}: {a} agree, {d} disagree");
    }
    for (why, n) in &tally.skipped {
        eprintln!("  skipped ({why}): {n}");
    }
    eprintln!(
        "  {} statements run; {} gave another outcome than their file expects:",
        tally.statements,
        tally.statements_diverged.len()
    );
    for s in &tally.statements_diverged {
        eprintln!("    {}", one_line(s));
    }
    // Grouped by query, in order of first appearance.
    let mut by_query: Vec<(String, Vec<String>)> = Vec::new();
    for (sql, d) in &tally.disagreements {
        match by_query.iter_mut().find(|(q, _)| q == sql) {
            Some((_, ds)) => ds.push(d.clone()),
            None => by_query.push((sql.clone(), vec![d.clone()])),
        }
    }
    let mut report = String::new();
    for (sql, ds) in &by_query {
        report.push_str(&format!("  QUERY {sql}\n"));
        for d in ds {
            report.push_str(&format!("    {d}\n"));
        }
    }
    eprint!("{report}");
    assert!(
        tally.disagreements.is_empty(),
        "{} disagreement(s) between views and their queries, {} distinct queries:\n{report}",
        tally.disagreements.len(),
        by_query.len(),
    );
}
