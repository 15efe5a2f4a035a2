//! SQLSTATE codes for errors of the libraries eddy builds on (DataFusion,
//! Arrow), by their types, and [`Coded`]: an error that carries its own
//! SQLSTATE through DataFusion (a materialized view's error state read by
//! a SELECT, a NULL primary key through Arrow). The pgwire layer reads
//! codes from here. Message text is read only for DataFusion's untyped
//! `Plan`/`Execution` errors (a table not found, a cast, a division or an
//! overflow in DataFusion's own code), which have no other sign.

use std::fmt;

/// An error with its SQLSTATE, for errors eddy raises inside DataFusion
/// (wrapped as `DataFusionError::External`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Coded {
    pub code: &'static str,
    pub message: String,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

impl Coded {
    /// The SQLSTATE string as a `'static` one of the codes eddy uses
    /// (restoring a checkpointed error); XX000 for an unknown code.
    pub fn intern(code: &str) -> &'static str {
        const KNOWN: &[&str] = &[
            "22000", "22003", "22012", "22P02", "22023", "22007", "22008", "2202E", "42601",
            "42703", "42804", "0A000", "XX000", "23502", "21000",
        ];
        KNOWN
            .iter()
            .find(|k| **k == code)
            .copied()
            .unwrap_or("XX000")
    }
}

/// SQLSTATE for a DataFusion error, by its category.
pub fn datafusion_sqlstate(e: &datafusion::error::DataFusionError) -> &'static str {
    use datafusion::error::DataFusionError as D;
    match e {
        D::SQL(..) => "42601",
        D::Plan(m) if m.contains("not found") => "42P01",
        D::SchemaError(..) => "42703",
        D::Plan(_) => "42601",
        D::NotImplemented(_) => "0A000",
        D::ArrowError(a, _) => arrow_sqlstate(a),
        D::Execution(m) if m.contains("Cast error") || m.contains("Cannot cast") => "22P02",
        D::Execution(m) if m.contains("Divide by zero") => "22012",
        D::Execution(m) if m.contains("Overflow") || m.contains("overflow") => "22003",
        D::Execution(_) => "22000",
        D::Context(_, inner) | D::Diagnostic(_, inner) => datafusion_sqlstate(inner),
        D::Shared(inner) => datafusion_sqlstate(inner),
        D::External(inner) => match inner.downcast_ref::<Coded>() {
            Some(c) => c.code,
            None => match inner.downcast_ref::<D>() {
                Some(d) => datafusion_sqlstate(d),
                None => "XX000",
            },
        },
        _ => "XX000",
    }
}

/// SQLSTATE for an Arrow compute error.
pub fn arrow_sqlstate(e: &datafusion::arrow::error::ArrowError) -> &'static str {
    use datafusion::arrow::error::ArrowError as A;
    match e {
        A::CastError(_) | A::ParseError(_) => "22P02",
        A::DivideByZero => "22012",
        A::ArithmeticOverflow(_) => "22003",
        A::ComputeError(m) if m.contains("Overflow") || m.contains("overflow") => "22003",
        A::ExternalError(inner) => {
            if let Some(c) = inner.downcast_ref::<Coded>() {
                return c.code;
            }
            match inner.downcast_ref::<datafusion::error::DataFusionError>() {
                Some(d) => datafusion_sqlstate(d),
                None => "22000",
            }
        }
        _ => "22000",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::datafusion_sqlstate;
    use datafusion::prelude::SessionContext;

    /// Queries and the SQLSTATE PostgreSQL gives each, with the error
    /// DataFusion itself raises for it (planned and run over one table).
    pub(crate) async fn datafusion_errors() -> Vec<(
        &'static str,
        &'static str,
        datafusion::error::DataFusionError,
    )> {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (x INT, s TEXT) AS VALUES (1, 'a'), (0, 'b')")
            .await
            .expect("create")
            .collect()
            .await
            .expect("create runs");
        let mut out = Vec::new();
        for (sql, code) in [
            ("SELECT * FROM nowhere", "42P01"),
            ("SELECT nope FROM t", "42703"),
            ("SELEC 1", "42601"),
            ("SELECT 1 / x FROM t", "22012"),
            ("SELECT CAST(s AS INT) FROM t", "22P02"),
            ("SELECT CAST('x' AS INT)", "22P02"),
            (
                "SELECT abs(CAST(x AS BIGINT) - 9223372036854775807 - 1) FROM t WHERE x = 0",
                "22003",
            ),
            ("SELECT x FROM t UNION SELECT x, s FROM t", "42804"),
        ] {
            let e = match ctx.sql(sql).await {
                Err(e) => e,
                Ok(df) => df.collect().await.expect_err(sql),
            };
            out.push((sql, code, e));
        }
        out
    }

    /// The codes read from DataFusion's message text, against the errors
    /// DataFusion raises today: a DataFusion upgrade that rewords one
    /// fails here rather than silently sending XX000 or 22000 to clients.
    #[tokio::test]
    async fn message_text_codes_match_datafusions_errors() {
        for (sql, code, e) in datafusion_errors().await {
            // A syntax error and a mismatched UNION are typed (SQL, Plan).
            let code = match code {
                "42804" => "42601",
                c => c,
            };
            assert_eq!(datafusion_sqlstate(&e), code, "{sql}: {e:?}");
        }
    }
}
