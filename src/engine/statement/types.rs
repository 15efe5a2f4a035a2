//! Column types: sqlparser's, and the ksqlDB types PostgreSQL's dialect
//! does not read; a CREATE STREAM's column list with ksqlDB's KEY columns.

use super::*;

/// A CREATE STREAM's column list, with ksqlDB's `KEY` (and `PRIMARY
/// KEY`) after a column's type marking a column held in the record key.
pub(super) fn stream_columns(p: &mut Parser<'_>) -> Result<(Vec<ColumnDef>, Vec<String>)> {
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
            keys.push(crate::engine::names::ident(&name));
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
pub(super) fn data_type(p: &mut Parser<'_>) -> Result<SqlType> {
    let mut pending = 0;
    let t = nested_type(p, &mut pending)?;
    if pending > 0 {
        return Err(syntax("unbalanced > in a type"));
    }
    Ok(t)
}

/// `pending`: closing `>` already consumed as part of a `>>` token.
pub(super) fn nested_type(p: &mut Parser<'_>, pending: &mut u32) -> Result<SqlType> {
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
