//! `COPY rel [(cols)] FROM STDIN [WITH (FORMAT text|csv|binary, HEADER,
//! DELIMITER, NULL, QUOTE, ESCAPE)]`: bulk loads into a table or a stream
//! (the binary format in `copy_binary.rs`).
//!
//! The pgwire layer collects the client's CopyData and hands the whole
//! payload to [`Engine::copy_in`] at CopyDone, so a client that disconnects
//! or sends CopyFail mid-COPY writes nothing. The rows are parsed as
//! PostgreSQL's COPY does, cast to the relation's column types (a value
//! that does not fit fails the whole COPY with the line it is on), and
//! inserted as one INSERT would be: one fsynced write, visible to the next
//! query.
//!
//! The two parsers are written here rather than taken from arrow-csv or the
//! csv crate because PostgreSQL's rules are not theirs: the text format's
//! backslash escapes and `\N`, and in CSV the difference between an
//! unquoted empty field (NULL) and a quoted one (an empty string).

use datafusion::common::TableReference;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray, new_null_array};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::sql::sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::sql::sqlparser::ast::{CopySource, Statement as SqlStatement};

use super::{Copy, Engine, EngineError, Output, Result, Statement, names, statement};

/// What a `COPY … FROM STDIN` loads, and how its data is written.
#[derive(Debug, Clone)]
pub struct CopyIn {
    pub relation: String,
    /// The columns the data holds, in order (all of them when the
    /// statement names none).
    pub columns: Vec<String>,
    pub options: CopyInOptions,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CopyInOptions {
    /// PostgreSQL's binary format (`copy_binary.rs`); the text options
    /// below do not apply.
    pub binary: bool,
    pub csv: bool,
    pub header: bool,
    pub delimiter: char,
    pub null: String,
    pub quote: char,
    pub escape: char,
}

impl CopyInOptions {
    /// From the statement's options, with PostgreSQL's defaults: text is
    /// tab-separated with `\N` for NULL; CSV is comma-separated with an
    /// unquoted empty field for NULL.
    pub fn parse(options: &[CopyOption], legacy: &[CopyLegacyOption]) -> Result<CopyInOptions> {
        let mut csv = false;
        let mut binary = false;
        let (mut header, mut delimiter, mut null, mut quote, mut escape) =
            (false, None, None, '"', None);
        for o in options {
            match o {
                CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                    "text" => csv = false,
                    "csv" => csv = true,
                    "binary" => binary = true,
                    other => {
                        return Err(EngineError::Unsupported(format!(
                            "COPY FROM with FORMAT {other}"
                        )));
                    }
                },
                CopyOption::Header(h) => header = *h,
                CopyOption::Delimiter(c) => delimiter = Some(*c),
                CopyOption::Null(n) => null = Some(n.clone()),
                CopyOption::Quote(c) => quote = *c,
                CopyOption::Escape(c) => escape = Some(*c),
                CopyOption::Encoding(e) if e.eq_ignore_ascii_case("utf8") => {}
                other => {
                    return Err(EngineError::Unsupported(format!(
                        "COPY FROM option {other}"
                    )));
                }
            }
        }
        for o in legacy {
            match o {
                CopyLegacyOption::Csv(sub) => {
                    csv = true;
                    for s in sub {
                        match s {
                            CopyLegacyCsvOption::Header => header = true,
                            CopyLegacyCsvOption::Quote(c) => quote = *c,
                            CopyLegacyCsvOption::Escape(c) => escape = Some(*c),
                            other => {
                                return Err(EngineError::Unsupported(format!(
                                    "COPY FROM option {other}"
                                )));
                            }
                        }
                    }
                }
                CopyLegacyOption::Header => header = true,
                CopyLegacyOption::Delimiter(c) => delimiter = Some(*c),
                CopyLegacyOption::Null(n) => null = Some(n.clone()),
                CopyLegacyOption::Binary => binary = true,
                other => {
                    return Err(EngineError::Unsupported(format!(
                        "COPY FROM option {other}"
                    )));
                }
            }
        }
        if binary && (csv || header || delimiter.is_some() || null.is_some()) {
            return Err(EngineError::Unsupported(
                "COPY options other than FORMAT with FORMAT binary".into(),
            ));
        }
        if header && !csv {
            return Err(EngineError::Unsupported(
                "COPY HEADER in text format (use FORMAT csv)".into(),
            ));
        }
        Ok(CopyInOptions {
            binary,
            csv,
            header,
            delimiter: delimiter.unwrap_or(if csv { ',' } else { '\t' }),
            null: null.unwrap_or_else(|| if csv { String::new() } else { "\\N".into() }),
            quote,
            escape: escape.unwrap_or(quote),
        })
    }
}

/// A COPY data error: SQLSTATE 22P04 (bad_copy_file_format) for the shape,
/// 22P02 for a value that does not fit its column.
fn bad(line: usize, what: impl std::fmt::Display) -> EngineError {
    EngineError::CopyData(format!("{what} (COPY line {line})"))
}

type Row = Vec<Option<String>>;

/// PostgreSQL's text format: one row per line, fields split on the
/// delimiter, backslash escapes, `\.` alone ends the data.
pub fn parse_text(data: &str, delimiter: char, null: &str) -> Result<Vec<(usize, Row)>> {
    let mut rows = Vec::new();
    for (i, line) in data.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line == "\\." {
            break;
        }
        if line.is_empty() && i + 1 == data.split('\n').count() {
            break; // the newline ending the last row
        }
        let mut row = Vec::new();
        let mut raw = String::new();
        let mut chars = line.chars().peekable();
        let mut field = String::new();
        let finish = |raw: &mut String, field: &mut String, row: &mut Row| {
            row.push(if raw == null {
                None
            } else {
                Some(std::mem::take(field))
            });
            raw.clear();
            field.clear();
        };
        while let Some(c) = chars.next() {
            if c == delimiter {
                finish(&mut raw, &mut field, &mut row);
                continue;
            }
            raw.push(c);
            if c != '\\' {
                field.push(c);
                continue;
            }
            let Some(e) = chars.next() else {
                return Err(bad(i + 1, "end-of-line after a backslash"));
            };
            raw.push(e);
            match e {
                'b' => field.push('\u{8}'),
                'f' => field.push('\u{c}'),
                'n' => field.push('\n'),
                'r' => field.push('\r'),
                't' => field.push('\t'),
                'v' => field.push('\u{b}'),
                '0'..='7' => {
                    let mut v = e.to_digit(8).unwrap_or(0);
                    for _ in 0..2 {
                        match chars.peek().and_then(|d| d.to_digit(8)) {
                            Some(d) => {
                                v = v * 8 + d;
                                raw.push(chars.next().unwrap_or('0'));
                            }
                            None => break,
                        }
                    }
                    field.push(char::from_u32(v).unwrap_or('\u{fffd}'));
                }
                'x' if chars.peek().is_some_and(|d| d.is_ascii_hexdigit()) => {
                    let mut v = 0;
                    for _ in 0..2 {
                        match chars.peek().and_then(|d| d.to_digit(16)) {
                            Some(d) => {
                                v = v * 16 + d;
                                raw.push(chars.next().unwrap_or('0'));
                            }
                            None => break,
                        }
                    }
                    field.push(char::from_u32(v).unwrap_or('\u{fffd}'));
                }
                other => field.push(other),
            }
        }
        finish(&mut raw, &mut field, &mut row);
        rows.push((i + 1, row));
    }
    Ok(rows)
}

/// PostgreSQL's CSV format: quoted fields may hold delimiters, quotes
/// (doubled, or after the escape character) and newlines; an unquoted
/// field equal to the NULL string is NULL, a quoted one never is.
pub fn parse_csv(data: &str, o: &CopyInOptions) -> Result<Vec<(usize, Row)>> {
    let mut rows = Vec::new();
    let mut row: Row = Vec::new();
    let mut field = String::new();
    let mut quoted = false; // this field had quotes
    let mut in_quotes = false;
    let mut line = 1usize;
    let mut row_line = 1usize;
    let mut at_row_start = true;
    let mut chars = data.chars().peekable();
    let end_field = |field: &mut String, quoted: &mut bool, row: &mut Row| {
        let v = std::mem::take(field);
        row.push(if !*quoted && v == o.null {
            None
        } else {
            Some(v)
        });
        *quoted = false;
    };
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == o.escape && (chars.peek() == Some(&o.quote) || chars.peek() == Some(&o.escape))
            {
                // An escaped quote: `""`, or `\"` with ESCAPE '\'.
                if let Some(q) = chars.next() {
                    field.push(q);
                }
                continue;
            }
            if c == o.quote {
                in_quotes = false;
                continue;
            }
            if c == '\n' {
                line += 1;
            }
            field.push(c);
            continue;
        }
        if at_row_start {
            // `\.` alone on a line ends the data.
            if c == '\\' && chars.peek() == Some(&'.') {
                let rest: String = chars.clone().skip(1).take(2).collect();
                if rest.is_empty() || rest.starts_with('\n') || rest.starts_with("\r\n") {
                    return finish_csv(rows, o);
                }
            }
            at_row_start = false;
            row_line = line;
        }
        if c == o.quote {
            in_quotes = true;
            quoted = true;
        } else if c == o.delimiter {
            end_field(&mut field, &mut quoted, &mut row);
        } else if c == '\n' || c == '\r' {
            if c == '\r' && chars.peek() == Some(&'\n') {
                chars.next();
            }
            end_field(&mut field, &mut quoted, &mut row);
            rows.push((row_line, std::mem::take(&mut row)));
            line += 1;
            at_row_start = true;
        } else {
            field.push(c);
        }
    }
    if in_quotes {
        return Err(bad(row_line, "unterminated CSV quoted field"));
    }
    if !at_row_start {
        end_field(&mut field, &mut quoted, &mut row);
        rows.push((row_line, row));
    }
    finish_csv(rows, o)
}

fn finish_csv(mut rows: Vec<(usize, Row)>, o: &CopyInOptions) -> Result<Vec<(usize, Row)>> {
    if o.header && !rows.is_empty() {
        rows.remove(0);
    }
    Ok(rows)
}

impl Engine {
    /// Load the data of a `COPY … FROM STDIN`; returns the rows written.
    pub async fn copy_in(
        &self,
        copy: &CopyIn,
        data: &[u8],
        txn: Option<&Arc<super::txn::Transaction>>,
    ) -> Result<usize> {
        let provider = self
            .ctx
            .table_provider(TableReference::bare(copy.relation.as_str()))
            .await?;
        let schema = provider.schema();
        let n = copy.columns.len();
        let parsed = if copy.options.binary {
            Parsed::Binary(super::copy_binary::parse(data, n)?)
        } else {
            let text = std::str::from_utf8(data)
                .map_err(|e| EngineError::CopyData(format!("COPY data is not UTF-8: {e}")))?;
            let rows = if copy.options.csv {
                parse_csv(text, &copy.options)?
            } else {
                parse_text(text, copy.options.delimiter, &copy.options.null)?
            };
            for (line, row) in &rows {
                if row.len() < n {
                    return Err(bad(
                        *line,
                        format!("missing data for column \"{}\"", copy.columns[row.len()]),
                    ));
                }
                if row.len() > n {
                    return Err(bad(*line, "extra data after last expected column"));
                }
            }
            Parsed::Text(rows)
        };
        let declared = self.declared_types(&copy.relation)?;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            let Some(i) = copy
                .columns
                .iter()
                .position(|c| c.eq_ignore_ascii_case(f.name()))
            else {
                columns.push(new_null_array(f.data_type(), parsed.len()));
                continue;
            };
            columns.push(match &parsed {
                Parsed::Text(rows) => text_column(f, rows, i)?,
                Parsed::Binary(rows) => {
                    let sql_type = declared.get(f.name()).map(String::as_str).unwrap_or("");
                    super::copy_binary::column(f, sql_type, rows, i)?
                }
            });
        }
        let rows = parsed.len();
        if rows == 0 {
            return Ok(0);
        }
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .map_err(|e| EngineError::DataFusion(e.into()))?;
        let ctx = match txn {
            // In a transaction block: the same session with the block's
            // `Transaction`, so the topic sink holds the rows.
            Some(txn) => std::borrow::Cow::Owned(super::txn::session_in(&self.ctx, txn)),
            None => std::borrow::Cow::Borrowed(&*self.ctx),
        };
        ctx.read_batch(batch)?
            .write_table(
                &super::names::quoted(&copy.relation),
                DataFrameWriteOptions::new(),
            )
            .await?;
        Ok(rows)
    }

    /// Column name → the SQL type it was declared with.
    fn declared_types(&self, relation: &str) -> Result<std::collections::HashMap<String, String>> {
        let catalog = self.lock()?;
        let columns = match catalog.get(relation) {
            Some(crate::catalog::Object::Table { columns, .. })
            | Some(crate::catalog::Object::Stream { columns, .. }) => columns.clone(),
            _ => vec![],
        };
        Ok(columns.into_iter().map(|c| (c.name, c.sql_type)).collect())
    }
}

/// COPY rows as parsed, before they are cast to the columns.
enum Parsed<'a> {
    Text(Vec<(usize, Row)>),
    Binary(Vec<super::copy_binary::BinaryRow<'a>>),
}

impl Parsed<'_> {
    fn len(&self) -> usize {
        match self {
            Parsed::Text(r) => r.len(),
            Parsed::Binary(r) => r.len(),
        }
    }
}

/// The column `f` from text field `i` of every row, cast to its type; the
/// first value that does not fit fails the COPY with its line.
fn text_column(f: &Field, rows: &[(usize, Row)], i: usize) -> Result<ArrayRef> {
    let strings: StringArray = rows.iter().map(|(_, r)| r[i].as_deref()).collect();
    let cast = crate::types::input::cast(&strings, f.data_type(), true)
        .map_err(|e| EngineError::CopyValue(e.to_string()))?;
    // A value that did not cast is NULL where the input was not.
    if let Some(r) = (0..rows.len()).find(|&r| cast.is_null(r) && !strings.is_null(r)) {
        return Err(EngineError::CopyValue(format!(
            "invalid input syntax for type {} column \"{}\": \"{}\" (COPY line {})",
            crate::types::pg_name(f.data_type()),
            f.name(),
            strings.value(r),
            rows[r].0
        )));
    }
    Ok(cast)
}

impl Engine {
    /// Run one COPY statement: `TO STDOUT` runs its query (planned from
    /// this parse, `$n` bound) and answers the rows to send; `FROM STDIN`
    /// checks the relation and columns and asks the protocol layer for the
    /// data, loaded by [`Engine::copy_in`].
    pub(super) async fn copy(&self, c: Copy, params: Option<ParamValues>) -> Result<Output> {
        match c {
            Copy::To {
                source,
                options,
                legacy_options,
            } => {
                let format = statement::copy_format(&options, &legacy_options)?;
                let query = match source {
                    CopySource::Query(q) => SqlStatement::Query(q),
                    table => {
                        let text = Self::copy_query(&table);
                        match super::parse(&text)?.pop().and_then(Statement::into_sql) {
                            Some(s) => s,
                            None => return Err(EngineError::Invalid(text)),
                        }
                    }
                };
                let (df, names) = self.query_frame(query, params).await?;
                let schema: SchemaRef = Arc::new(names::renamed(df.schema().as_arrow(), &names));
                let batches = df.collect().await?;
                Ok(Output::CopyOut {
                    schema,
                    batches,
                    format,
                })
            }
            Copy::From {
                table,
                columns,
                options,
                legacy_options,
            } => {
                let relation = table;
                let provider = self
                    .ctx
                    .table_provider(TableReference::bare(relation.as_str()))
                    .await
                    .map_err(|_| EngineError::UnknownObject {
                        kind: "relation",
                        name: relation.clone(),
                    })?;
                let schema = provider.schema();
                let columns: Vec<String> = if columns.is_empty() {
                    schema.fields().iter().map(|f| f.name().clone()).collect()
                } else {
                    columns
                };
                for c in &columns {
                    if schema.column_with_name(c).is_none() {
                        return Err(EngineError::UnknownColumn(c.clone()));
                    }
                }
                Ok(Output::CopyIn(CopyIn {
                    relation,
                    columns,
                    options: CopyInOptions::parse(&options, &legacy_options)?,
                }))
            }
            Copy::Other => Err(EngineError::Unsupported(
                "this form of COPY (supported: COPY … TO STDOUT and COPY … FROM STDIN)".into(),
            )),
        }
    }

    /// The query a `COPY … TO` reads.
    pub(super) fn copy_query(source: &CopySource) -> String {
        match source {
            CopySource::Query(q) => q.to_string(),
            CopySource::Table {
                table_name,
                columns,
            } => {
                let cols = if columns.is_empty() {
                    "*".to_string()
                } else {
                    columns
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!("SELECT {cols} FROM {table_name}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(csv: bool) -> CopyInOptions {
        CopyInOptions {
            binary: false,
            csv,
            header: false,
            delimiter: if csv { ',' } else { '\t' },
            null: if csv { String::new() } else { "\\N".into() },
            quote: '"',
            escape: '"',
        }
    }

    fn values(rows: Vec<(usize, Row)>) -> Vec<Vec<Option<String>>> {
        rows.into_iter().map(|(_, r)| r).collect()
    }

    fn s(x: &str) -> Option<String> {
        Some(x.to_string())
    }

    #[test]
    fn text_format_escapes_and_nulls() {
        let rows = parse_text(
            "1\ta\\tb\t\\N\n2\t\\\\x\\101\t\n\\.\nignored\n",
            '\t',
            "\\N",
        )
        .expect("parses");
        assert_eq!(
            values(rows),
            vec![
                vec![s("1"), s("a\tb"), None],
                vec![s("2"), s("\\xA"), s("")],
            ]
        );
    }

    #[test]
    fn csv_quotes_nulls_and_newlines() {
        let rows = parse_csv(
            "1,\"a,b\",\n2,\"\",\"say \"\"hi\"\"\nthere\"\n",
            &opts(true),
        )
        .expect("parses");
        assert_eq!(
            values(rows),
            vec![
                vec![s("1"), s("a,b"), None],
                vec![s("2"), s(""), s("say \"hi\"\nthere")],
            ]
        );
        let mut o = opts(true);
        o.header = true;
        let rows = parse_csv("a,b\r\n1,2\r\n\\.\r\n", &o).expect("parses");
        assert_eq!(values(rows), vec![vec![s("1"), s("2")]]);
        assert!(parse_csv("1,\"open\n", &opts(true)).is_err());
    }
}
