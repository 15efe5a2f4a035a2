//! ksqlDB's clauses sqlparser does not read (EMIT CHANGES|FINAL, WINDOW,
//! WITHIN, PARTITION BY, DELETE TOPIC, WATERMARK FOR, EMIT ON WINDOW
//! CLOSE): blanked out of the text before sqlparser sees it, then applied
//! to the statement parsed around them.

use super::*;

/// A text with ksqlDB's clauses blanked out (None: it had none) and each
/// clause with its byte offset.
pub(super) type Blanked = (Option<String>, Vec<(usize, Emit)>);

/// ksqlDB's clauses sqlparser does not know.
#[derive(Debug, Clone)]
pub(super) enum Emit {
    Changes,
    Final,
    /// `DROP STREAM|TABLE … DELETE TOPIC`.
    DeleteTopic,
    /// `WINDOW TUMBLING|HOPPING (…)` after FROM.
    Window(crate::engine::ksql_windows::Window),
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
pub(super) fn blank_emits(sql: &str) -> Result<Blanked> {
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
        let name = crate::engine::names::ident(&datafusion::sql::sqlparser::ast::Ident {
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
        let window = crate::engine::ksql_windows::parse(
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
        let column = crate::engine::names::ident(&datafusion::sql::sqlparser::ast::Ident {
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
pub(super) fn on_window_close(q: &mut Query) {
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
pub(super) fn watermark_delay(column: &str, expr: &str) -> Result<i64> {
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
    let is_column = |e: &SqlExpr| matches!(e, SqlExpr::Identifier(i) if crate::engine::names::ident(i) == column);
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
pub(super) fn with_window(
    stmt: Statement,
    w: &crate::engine::ksql_windows::Window,
    emit_final: bool,
) -> Result<Statement> {
    use crate::engine::ksql_windows::apply;
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
pub(super) fn emit_changes(stmt: Statement) -> Result<Statement> {
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
                    name: crate::engine::names::object(target),
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

/// A statement with the ksqlDB clauses found in its text applied.
pub(super) fn apply(mut stmt: Statement, mut found: Vec<&Emit>) -> Result<Statement> {
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
        let join_window =
            crate::engine::ksql_windows::join_window(before, after, grace.as_deref())?;
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
        crate::engine::ksql_windows::within(query, before, after)?;
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
    Ok(match found.first() {
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
    })
}
