//! The `CREATE`/`DROP`/`ALTER` forms that are eddy's own: topics,
//! streams, sources (Materialize's and RisingWave's spellings and their
//! formats), connections, sinks, indexes.

use super::*;

/// `CREATE TOPIC` and `CREATE STREAM` (columns, columns from a registered
/// schema, or ksqlDB's `AS SELECT`), from CREATE.
pub(super) fn topic_or_stream(
    p: &mut Parser<'_>,
    limits: &Limits,
    cut: &mut Cut<'_, '_>,
) -> Result<Statement> {
    p.next_token();
    let is_topic = word_is(&p.next_token().token, "topic");
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = p.parse_object_name(false).map_err(syntax)?;
    Ok(if is_topic {
        let name = topic_name(&name);
        let opts = options(p.parse_options(Keyword::WITH).map_err(syntax)?)?;
        Statement::Ddl(Ddl::CreateTopic {
            name,
            options: opts,
            if_not_exists,
        })
    } else if p.peek_token().token == Token::LParen {
        let spelled = name;
        let name = crate::engine::names::object(&spelled);
        let (columns, keys) = stream_columns(p)?;
        let opts = options(p.parse_options(Keyword::WITH).map_err(syntax)?)?;
        Statement::Ddl(Ddl::CreateStream {
            name,
            columns,
            keys,
            options: opts,
            if_not_exists,
            sql: cut.text(p),
        })
    } else if p.peek_keyword(Keyword::WITH)
        && !matches!(
            p.peek_nth_token(p_with_end(p)).token,
            Token::Word(ref w) if w.keyword == Keyword::AS
        )
    {
        // No columns and no query: an Avro stream whose columns
        // are its registered schema's fields.
        let opts = options(p.parse_options(Keyword::WITH).map_err(syntax)?)?;
        Statement::Ddl(Ddl::CreateStream {
            name: crate::engine::names::object(&name),
            columns: vec![],
            keys: vec![],
            options: opts,
            if_not_exists,
            sql: cut.text(p),
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
        Statement::Ddl(Ddl::CreatePersistent(Box::new(Persistent {
            table: false,
            name: crate::engine::names::object(&name),
            topic: ksql_topic(&name),
            options: opts,
            query,
            if_not_exists,
            sql: cut.text(p),
            partition_by: None,
            window: None,
            insert: false,
            within: None,
        })))
    })
}

/// `CREATE SINK name FROM relation INTO …` in eddy's and Materialize's
/// spellings, from CREATE.
pub(super) fn sink(p: &mut Parser<'_>, cut: &mut Cut<'_, '_>) -> Result<Statement> {
    p.next_token();
    p.next_token();
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = relation_name(p)?;
    p.expect_keyword(Keyword::FROM).map_err(syntax)?;
    let from = relation_name(p)?;
    let mut avro = false;
    let mut connection = None;
    let topic = if p.parse_keyword(Keyword::INTO) {
        let t = p.next_token().token;
        if word_is(&t, "kafka") {
            // Materialize's INTO KAFKA CONNECTION c (TOPIC 't').
            if !word_is(&p.next_token().token, "connection") {
                return Err(syntax("expected INTO KAFKA CONNECTION name (TOPIC '…')"));
            }
            connection = Some(relation_name(p)?);
            paren_string(p, &["topic"])?
                .ok_or_else(|| syntax("expected (TOPIC 'name') after INTO KAFKA CONNECTION …"))?
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
            key = Some(
                cols.iter()
                    .map(crate::engine::names::ident)
                    .collect::<Vec<_>>(),
            );
        } else if word_is(&t, "format") {
            p.next_token();
            let (f, _) = source_format(p)?;
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
            let _ = dotted_options(p)?;
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
    Ok(Statement::Ddl(Ddl::CreateSink {
        name,
        from,
        topic,
        connection,
        avro,
        upsert_key,
        if_not_exists,
        sql: cut.text(p),
    }))
}

/// `DROP TOPIC|STREAM|SINK|SOURCE|CONNECTION [IF EXISTS] names
/// [CASCADE|RESTRICT]`, from DROP.
pub(super) fn drop(p: &mut Parser<'_>) -> Result<Statement> {
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
            _ => crate::engine::names::object(n),
        })
        .collect();
    let cascade =
        p.parse_one_of_keywords(&[Keyword::CASCADE, Keyword::RESTRICT]) == Some(Keyword::CASCADE);
    Ok(Statement::Ddl(Ddl::Drop {
        kind,
        names,
        if_exists,
        cascade,
        delete_topic: false,
    }))
}

/// `ALTER TOPIC name SET (…) | RESET (…)`, from ALTER.
pub(super) fn alter_topic(p: &mut Parser<'_>) -> Result<Statement> {
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
    Ok(Statement::Ddl(Ddl::AlterTopic { name, set, reset }))
}

/// The rest of `CREATE [DEFAULT] INDEX` after INDEX: `[IF NOT EXISTS]
/// [name] [IN CLUSTER c] ON relation [USING method] [(col, …)]
/// [WITH (…)]`. Columns are column names (an index on an expression is
/// refused).
pub(super) fn create_index(p: &mut Parser<'_>, default: bool) -> Result<Ddl> {
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
pub(super) fn dotted_options(p: &mut Parser<'_>) -> Result<BTreeMap<String, String>> {
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

/// A parenthesised option list (`(TOPIC 't', …)`, `(URL '…')`,
/// `(BROKERS ('a', 'b'))`): the string of the first option named one of
/// `words` (`word 'v'`, `word = 'v'`, or the first of `word ('v', …)`),
/// the rest read past, nested parentheses included.
pub(super) fn paren_string(p: &mut Parser<'_>, words: &[&str]) -> Result<Option<String>> {
    p.expect_token(&Token::LParen).map_err(syntax)?;
    let mut found = None;
    let mut depth = 1;
    while depth > 0 {
        let t = p.next_token().token;
        match &t {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::EOF => return Err(syntax("unclosed parenthesis")),
            t if depth == 1 && words.iter().any(|w| word_is(t, w)) && found.is_none() => {
                let _ = p.consume_token(&Token::Eq);
                if p.consume_token(&Token::LParen) {
                    depth += 1;
                }
                found = Some(p.parse_literal_string().map_err(syntax)?);
            }
            _ => {}
        }
    }
    Ok(found)
}

/// Skip a parenthesised list, nested parentheses included.
pub(super) fn skip_parens(p: &mut Parser<'_>) -> Result<()> {
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
/// The connection's address, its librdkafka properties, and whether it
/// is a schema registry's (else a Kafka cluster's).
pub(super) fn connection(p: &mut Parser<'_>) -> Result<(String, BTreeMap<String, String>, bool)> {
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
        let url = paren_string(p, &["url"])?;
        let _ = dotted_options(p)?;
        return url.map(|u| (u, BTreeMap::new(), true)).ok_or_else(|| {
            syntax("CREATE CONNECTION … TO CONFLUENT SCHEMA REGISTRY (…) needs URL '…'")
        });
    }
    if !word_is(&to, "kafka") {
        return Err(EngineError::Unsupported(
            "CREATE CONNECTION other than TO KAFKA (…) or TO CONFLUENT SCHEMA REGISTRY (…)".into(),
        ));
    }
    let (brokers, properties) = kafka_connection_options(p)?;
    // `WITH (VALIDATE = false)`.
    let _ = dotted_options(p)?;
    if brokers.is_empty() {
        return Err(syntax(
            "CREATE CONNECTION … TO KAFKA (…) needs BROKER 'host:port'",
        ));
    }
    Ok((brokers.join(","), properties, false))
}

/// Materialize's Kafka connection options: the brokers (`BROKER 'a'`,
/// `BROKERS ('a', 'b')`) and, as librdkafka properties, the security
/// ones (`SECURITY PROTOCOL`, `SASL MECHANISMS`, `SASL USERNAME`, `SASL
/// PASSWORD`, `SSL CERTIFICATE AUTHORITY`, `SSL CERTIFICATE`, `SSL KEY`);
/// others (`PROGRESS TOPIC`, …) are read past.
fn kafka_connection_options(p: &mut Parser<'_>) -> Result<(Vec<String>, BTreeMap<String, String>)> {
    p.expect_token(&Token::LParen).map_err(syntax)?;
    let mut brokers = Vec::new();
    let mut properties = BTreeMap::new();
    let value = |p: &mut Parser<'_>| -> Result<String> {
        match p.next_token().token {
            Token::SingleQuotedString(s) => Ok(s),
            Token::Word(w) if w.value.eq_ignore_ascii_case("secret") => {
                Err(EngineError::Unsupported(
                    "SECRET in a connection (eddy has no secrets yet): give the value as a string literal".into(),
                ))
            }
            Token::Word(w) => Ok(w.value),
            Token::Number(n, _) => Ok(n),
            other => Err(syntax(format!("expected a value, found {other}"))),
        }
    };
    loop {
        let mut key = Vec::new();
        while let Token::Word(w) = p.peek_token().token {
            key.push(w.value.to_ascii_uppercase());
            p.next_token();
        }
        let _ = p.consume_token(&Token::Eq);
        let values = if p.consume_token(&Token::LParen) {
            let mut v = vec![value(p)?];
            while p.consume_token(&Token::Comma) {
                v.push(value(p)?);
            }
            p.expect_token(&Token::RParen).map_err(syntax)?;
            v
        } else {
            vec![value(p)?]
        };
        let property = match key.join(" ").as_str() {
            "BROKER" | "BROKERS" => {
                brokers.extend(values.iter().cloned());
                None
            }
            "SECURITY PROTOCOL" => Some("security.protocol"),
            "SASL MECHANISMS" | "SASL MECHANISM" => Some("sasl.mechanism"),
            "SASL USERNAME" => Some("sasl.username"),
            "SASL PASSWORD" => Some("sasl.password"),
            "SSL CERTIFICATE AUTHORITY" => Some("ssl.ca.pem"),
            "SSL CERTIFICATE" => Some("ssl.certificate.pem"),
            "SSL KEY" => Some("ssl.key.pem"),
            _ => None,
        };
        if let Some(k) = property {
            properties.insert(k.to_string(), values.join(","));
        }
        if !p.consume_token(&Token::Comma) {
            break;
        }
    }
    p.expect_token(&Token::RParen).map_err(syntax)?;
    Ok((brokers, properties))
}

/// A value format of Materialize (`FORMAT BYTES|TEXT|JSON|CSV WITH n
/// COLUMNS`) or RisingWave (`FORMAT PLAIN ENCODE JSON|CSV|BYTES`, `ROW
/// FORMAT JSON`): eddy's format and, for Materialize's, the columns it
/// gives a source (`data bytea`, `text text`, `data jsonb`,
/// `column1 … columnN text`).
pub(super) fn source_format(p: &mut Parser<'_>) -> Result<(&'static str, Option<String>)> {
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

pub(super) fn unsupported_format(name: &str) -> EngineError {
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
/// `FROM LOAD GENERATOR COUNTER | NEXMARK | AUCTION [(TICK INTERVAL '…',
/// SCALE FACTOR s, UP TO n)] [FOR ALL TABLES | FOR TABLES (t [AS name],
/// …)]`, after CREATE SOURCE name (`engine/generator.rs`). COUNTER is one
/// stream named as the source; the others make a stream per table
/// (Materialize's subsources), named as the table unless renamed, each
/// recorded with a CREATE SOURCE of its own (`FOR TABLES (t AS name)`)
/// so that it restarts alone.
/// The number after a load generator's option `after`.
fn number<T: std::str::FromStr>(p: &mut Parser<'_>, after: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match p.next_token().token {
        Token::Number(n, _) => n.parse().map_err(syntax),
        other => Err(syntax(format!(
            "expected a number after {after}, found {other}"
        ))),
    }
}

fn load_generator(p: &mut Parser<'_>, name: String, if_not_exists: bool) -> Result<Ddl> {
    p.next_token();
    if !word_is(&p.next_token().token, "generator") {
        return Err(syntax("expected GENERATOR after FROM LOAD"));
    }
    let kind = p.next_token().token.to_string().to_ascii_lowercase();
    let Some(tables) = crate::engine::generator::tables(&kind) else {
        return Err(EngineError::Unsupported(format!(
            "LOAD GENERATOR {} (eddy generates COUNTER, NEXMARK and AUCTION)",
            kind.to_ascii_uppercase()
        )));
    };
    let mut generator = crate::engine::generator::Generator::new(tables[0].1);
    let mut written = Vec::new();
    if p.consume_token(&Token::LParen) {
        loop {
            let option = p.next_token().token;
            if word_is(&option, "tick") {
                if !word_is(&p.next_token().token, "interval") {
                    return Err(syntax("expected TICK INTERVAL '…'"));
                }
                let _ = p.consume_token(&Token::Eq);
                let text = p.parse_literal_string().map_err(syntax)?;
                let i = crate::types::input::parse_interval(&text)
                    .filter(|i| i.months == 0 && i.days == 0 && i.nanoseconds >= 1_000_000)
                    .ok_or_else(|| {
                        EngineError::Invalid(format!(
                            "TICK INTERVAL '{text}': an interval of at least a millisecond, under a day"
                        ))
                    })?;
                generator.tick = std::time::Duration::from_nanos(i.nanoseconds as u64);
                written.push(format!("TICK INTERVAL '{text}'"));
            } else if word_is(&option, "up") {
                if !word_is(&p.next_token().token, "to") {
                    return Err(syntax("expected UP TO n"));
                }
                let _ = p.consume_token(&Token::Eq);
                let n: i64 = number(p, "UP TO")?;
                generator.up_to = Some(n);
                written.push(format!("UP TO {n}"));
            } else if word_is(&option, "scale") && kind == "nexmark" {
                if !word_is(&p.next_token().token, "factor") {
                    return Err(syntax("expected SCALE FACTOR s"));
                }
                let _ = p.consume_token(&Token::Eq);
                let s: f64 = number(p, "SCALE FACTOR")?;
                if !(s > 0.0 && s <= 1000.0) {
                    return Err(EngineError::Invalid(format!(
                        "SCALE FACTOR {s}: more than 0, at most 1000 (1000 × it events a second)"
                    )));
                }
                generator.scale = s;
                written.push(format!("SCALE FACTOR {s}"));
            } else {
                let allowed = match kind.as_str() {
                    "nexmark" => "TICK INTERVAL, SCALE FACTOR, UP TO",
                    _ => "TICK INTERVAL, UP TO",
                };
                return Err(EngineError::Unsupported(format!(
                    "LOAD GENERATOR {} option {option} ({allowed})",
                    kind.to_ascii_uppercase()
                )));
            }
            if !p.consume_token(&Token::Comma) {
                break;
            }
        }
        p.expect_token(&Token::RParen).map_err(syntax)?;
    }
    // The tables wanted, as (table, its stream's name).
    let chosen: Vec<(&str, String)> = if kind == "counter" {
        vec![("counter", name.clone())]
    } else {
        if !p.parse_keyword(Keyword::FOR) {
            return Err(syntax(format!(
                "LOAD GENERATOR {} makes several tables: add FOR ALL TABLES or FOR TABLES (…)",
                kind.to_ascii_uppercase()
            )));
        }
        if p.parse_keywords(&[Keyword::ALL, Keyword::TABLES]) {
            tables.iter().map(|(t, ..)| (*t, t.to_string())).collect()
        } else if p.parse_keyword(Keyword::TABLES) {
            p.expect_token(&Token::LParen).map_err(syntax)?;
            let mut chosen = Vec::new();
            loop {
                let t = p
                    .parse_identifier()
                    .map_err(syntax)?
                    .value
                    .to_ascii_lowercase();
                let Some((table, ..)) = tables.iter().find(|(n, ..)| *n == t) else {
                    return Err(EngineError::Invalid(format!(
                        "LOAD GENERATOR {} has no table {t} (it has {})",
                        kind.to_ascii_uppercase(),
                        tables
                            .iter()
                            .map(|(n, ..)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                let as_name = if p.parse_keyword(Keyword::AS) {
                    relation_name(p)?
                } else {
                    t.clone()
                };
                chosen.push((*table, as_name));
                if !p.consume_token(&Token::Comma) {
                    break;
                }
            }
            p.expect_token(&Token::RParen).map_err(syntax)?;
            chosen
        } else {
            return Err(syntax("expected FOR ALL TABLES or FOR TABLES (…)"));
        }
    };
    let several = chosen.len() > 1;
    let mut ddls = Vec::with_capacity(chosen.len());
    for (table, stream) in chosen {
        let Some((_, t, columns)) = tables.iter().find(|(n, ..)| *n == table) else {
            continue;
        };
        let g = crate::engine::generator::Generator {
            table: *t,
            ..generator.clone()
        };
        let mut options = BTreeMap::new();
        g.to_options(&mut options);
        options.insert("topic".to_string(), stream.clone());
        options.insert("format".to_string(), "json".to_string());
        options.insert("partitions".to_string(), "1".to_string());
        options.insert("source".to_string(), "true".to_string());
        let columns = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(columns)
            .and_then(|mut q| q.parse_columns())
            .map_err(syntax)?
            .0;
        // A subsource of several is recorded as a source of its own (the
        // statement's text is recorded for one).
        let sql = if several {
            let options = match written.is_empty() {
                true => String::new(),
                false => format!(" ({})", written.join(", ")),
            };
            format!(
                "CREATE SOURCE {} FROM LOAD GENERATOR {}{options} FOR TABLES ({table} AS {})",
                crate::engine::names::quoted(&stream),
                kind.to_ascii_uppercase(),
                crate::engine::names::quoted(&stream),
            )
        } else {
            String::new()
        };
        ddls.push(Ddl::CreateStream {
            name: stream,
            columns,
            keys: vec![],
            options,
            if_not_exists,
            sql,
        });
    }
    match (ddls.pop(), ddls.is_empty()) {
        (Some(one), true) => Ok(one),
        (Some(last), false) => {
            ddls.push(last);
            Ok(Ddl::CreateSources(ddls))
        }
        (None, _) => Err(syntax("no tables chosen")),
    }
}

pub(super) fn source(p: &mut Parser<'_>) -> Result<Ddl> {
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
        if let Some(b) = with.get("properties.bootstrap.server") {
            options.insert("brokers".to_string(), b.clone());
        }
        for idle in ["idle_timeout", "scan.watermark.idle-timeout"] {
            if let Some(t) = with.get(idle) {
                options.insert(idle.to_string(), t.clone());
            }
        }
    } else {
        if p.parse_keyword(Keyword::IN) {
            // IN CLUSTER c: eddy has one.
            let _ = p.next_token();
            let _ = p.parse_identifier().map_err(syntax)?;
        }
        p.expect_keyword(Keyword::FROM).map_err(syntax)?;
        if word_is(&p.peek_token().token, "load") {
            return load_generator(p, name, if_not_exists);
        }
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
            let brokers = p.parse_literal_string().map_err(syntax)?;
            options.insert("brokers".to_string(), brokers);
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
