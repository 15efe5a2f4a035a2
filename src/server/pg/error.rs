//! Errors as a PostgreSQL client gets them: every error a user error with
//! a SQLSTATE (the engine's own, DataFusion's by its error type or, for
//! errors datafusion-postgres reports as internal, by their message), and
//! syntax errors with their position in the query for psql's caret.
//! Knows error values only: not how statements run or rows are encoded.

use datafusion_postgres::pgwire;
use futures::{StreamExt, stream};
use pgwire::api::results::QueryResponse;
use pgwire::error::{ErrorInfo, PgWireError};

use crate::engine::EngineError;

pub(super) fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message,
    )))
}

pub(super) fn engine_error(e: EngineError) -> PgWireError {
    let code = e.sqlstate();
    let message = e.to_string();
    match postgres_message(code, &message) {
        Some((message, hint)) => {
            let mut info = ErrorInfo::new("ERROR".into(), code.into(), message);
            info.hint = hint;
            PgWireError::UserError(Box::new(info))
        }
        None => user_error(code, message),
    }
}

/// PostgreSQL's message for DataFusion's most common planning errors,
/// which clients and people match on: `relation "t" does not exist`,
/// `column "c" does not exist` (DataFusion's suggestion as the hint).
fn postgres_message(code: &str, message: &str) -> Option<(String, Option<String>)> {
    match code {
        "42P01" => {
            let at = message.find("table '")? + 7;
            let name = &message[at..at + message[at..].find("' not found")?];
            let last = name.rsplit('.').next().unwrap_or(name);
            Some((format!("relation \"{last}\" does not exist"), None))
        }
        "42703" => {
            let at = message.find("No field named ")? + 15;
            let rest = &message[at..];
            let end = rest
                .find(". ")
                .or_else(|| rest.find(".\n"))
                .unwrap_or(rest.len());
            let name = rest[..end].trim_end_matches('.');
            let name = name.rsplit('.').next().unwrap_or(name).trim_matches('"');
            let hint = rest.find("Did you mean '").map(|h| {
                let h = &rest[h + 14..];
                let column = &h[..h.find("'?").unwrap_or(h.len())];
                format!("Perhaps you meant to reference the column {column}.")
            });
            Some((format!("column \"{name}\" does not exist"), hint))
        }
        _ => None,
    }
}

/// An error parsing `query`, with the position (1-based, in characters)
/// sqlparser reports as `Line: L, Column: C`, so psql points at it.
pub(super) fn parse_error(query: &str, e: EngineError) -> PgWireError {
    let message = e.to_string();
    let mut info = ErrorInfo::new("ERROR".into(), e.sqlstate().into(), message.clone());
    info.position = error_position(query, &message).map(|p| p.to_string());
    PgWireError::UserError(Box::new(info))
}

fn error_position(query: &str, message: &str) -> Option<usize> {
    let at = message.rfind("Line: ")?;
    let rest = &message[at + 6..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let line: usize = line.trim().parse().ok()?;
    let col: usize = rest
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    let mut pos = 0usize;
    for (i, l) in query.split('\n').enumerate() {
        if i + 1 == line {
            return Some(pos + col.min(l.chars().count() + 1));
        }
        pos += l.chars().count() + 1;
    }
    None
}

/// An error as the client gets it: a user error with the SQLSTATE its
/// cause calls for (protocol and I/O errors pass through: they close the
/// session).
pub(super) fn with_sqlstate(e: PgWireError) -> PgWireError {
    match e {
        PgWireError::UserError(mut info) => {
            refine_code(&mut info);
            PgWireError::UserError(info)
        }
        PgWireError::ApiError(_) => {
            let mut info = Box::new(ErrorInfo::new(
                "ERROR".into(),
                sqlstate_of(&e).into(),
                e.to_string(),
            ));
            refine_code(&mut info);
            PgWireError::UserError(info)
        }
        other => other,
    }
}

/// Errors from DataFusion reach us through datafusion-postgres as internal
/// errors (XX000) carrying DataFusion's message; give them the SQLSTATE a
/// PostgreSQL client expects from the message's category.
pub(super) fn refine_code(info: &mut ErrorInfo) {
    if info.code != "XX000" {
        return;
    }
    let m = info.message.as_str();
    let code = if m.contains("Error during planning: table") && m.contains("not found") {
        "42P01"
    } else if m.contains("Schema error: No field named") {
        "42703"
    } else if m.contains("SQL error: ParserError") || m.contains("sql parser error") {
        "42601"
    } else if m.contains("This feature is not implemented") {
        "0A000"
    } else if m.contains("Divide by zero") {
        "22012"
    } else if m.contains("Cast error") || m.contains("Cannot cast") {
        "22P02"
    } else if m.contains("Overflow") || m.contains("overflow") {
        "22003"
    } else if m.contains("Error during planning") {
        "42804"
    } else {
        return;
    };
    info.code = code.to_string();
}

/// SQLSTATE for errors coming back from DataFusion through
/// datafusion-postgres (wrapped as API errors).
pub(super) fn sqlstate_of(e: &PgWireError) -> &'static str {
    if let PgWireError::ApiError(inner) = e
        && let Some(df) = inner.downcast_ref::<datafusion::error::DataFusionError>()
    {
        return crate::engine::datafusion_sqlstate(df);
    }
    "XX000"
}

/// Errors raised while the rows stream (DataFusion runs a query as its
/// rows are pulled: a division by zero, a view in an error state) carry
/// their SQLSTATE as errors before the first row do.
pub(super) fn coded_errors(mut resp: QueryResponse) -> QueryResponse {
    let rows = std::mem::replace(&mut resp.data_rows, Box::pin(stream::empty()));
    resp.data_rows = Box::pin(rows.map(|row| row.map_err(with_sqlstate)));
    resp
}

#[cfg(test)]
mod tests {
    use super::{error_position, postgres_message};

    #[test]
    fn planning_errors_read_as_postgresql_words_them() {
        assert_eq!(
            postgres_message(
                "42P01",
                "Error during planning: table 'eddy.public.foobar' not found"
            ),
            Some(("relation \"foobar\" does not exist".into(), None))
        );
        let (m, hint) = postgres_message(
            "42703",
            "Schema error: No field named mixc. Did you mean 'foobar.\"MixC\"'?\nColumn names are case sensitive.",
        )
        .expect("in the test");
        assert_eq!(m, "column \"mixc\" does not exist");
        assert_eq!(
            hint.as_deref(),
            Some("Perhaps you meant to reference the column foobar.\"MixC\".")
        );
        let (m, _) =
            postgres_message("42703", "Schema error: No field named t.b.").expect("in the test");
        assert_eq!(m, "column \"b\" does not exist");
    }

    /// The codes `refine_code` reads from message text, against the
    /// messages of the errors DataFusion raises today (as
    /// datafusion-postgres passes them on: XX000 with the text): a
    /// DataFusion upgrade that rewords one fails here.
    #[tokio::test]
    async fn refined_codes_match_datafusions_messages() {
        use datafusion_postgres::pgwire::error::ErrorInfo;
        for (sql, code, e) in crate::sqlstate::tests::datafusion_errors().await {
            let mut info = ErrorInfo::new("ERROR".into(), "XX000".into(), e.to_string());
            super::refine_code(&mut info);
            assert_eq!(info.code, code, "{sql}: {e}");
        }
    }

    #[test]
    fn syntax_error_positions_count_characters() {
        let m = "syntax error: sql parser error: Expected: end of statement, found: x at Line: 2, Column: 5";
        assert_eq!(error_position("SELECT 1;\nSELX x", m), Some(15));
        assert_eq!(error_position("SELECT 1", "no position"), None);
    }
}
