//! sqllogictest driver over one tokio-postgres connection (simple
//! protocol, as psql sends), shared by the `slt/` runner and the peer-test
//! runners.

use async_trait::async_trait;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// sqllogictest driver over one tokio-postgres connection. Errors read
/// `SQLSTATE: message`, so `.slt` files can match the code.
pub struct Pg {
    pub client: tokio_postgres::Client,
}

#[derive(Debug)]
pub struct PgError(pub String);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PgError {}

#[async_trait]
impl AsyncDB for Pg {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
        let msgs = self
            .client
            .simple_query(sql)
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) => PgError(format!("{}: {}", db.code().code(), db.message())),
                None => PgError(e.to_string()),
            })?;
        let mut rows = Vec::new();
        let mut cols = 0;
        let mut count = None;
        let mut described = false;
        for m in msgs {
            match m {
                SimpleQueryMessage::RowDescription(d) => {
                    described = true;
                    cols = d.len();
                }
                SimpleQueryMessage::Row(r) => {
                    cols = r.len();
                    rows.push(
                        (0..r.len())
                            .map(|i| {
                                r.get(i)
                                    .map(|s| {
                                        if s.is_empty() {
                                            "(empty)".to_string()
                                        } else {
                                            s.to_string()
                                        }
                                    })
                                    .unwrap_or_else(|| "NULL".into())
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => count = Some(n),
                _ => {}
            }
        }
        if described || !rows.is_empty() {
            Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; cols],
                rows,
            })
        } else {
            Ok(DBOutput::StatementComplete(count.unwrap_or(0)))
        }
    }

    fn engine_name(&self) -> &str {
        "postgresql"
    }

    async fn shutdown(&mut self) {}
}

pub async fn connect(addr: std::net::SocketAddr) -> tokio_postgres::Client {
    let conn_str = format!(
        "host={} port={} user=eddy dbname=eddy",
        addr.ip(),
        addr.port()
    );
    let (client, conn) = tokio_postgres::connect(&conn_str, NoTls)
        .await
        .expect("connect over pgwire");
    tokio::spawn(conn);
    client
}

/// Every row of a simple query, columns joined by a tab (NULL as `NULL`),
/// sorted: what tests compare views and queries by.
pub async fn rows(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let msgs = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out: Vec<String> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("\t"),
            ),
            _ => None,
        })
        .collect();
    out.sort();
    out
}
