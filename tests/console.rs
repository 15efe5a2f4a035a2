//! The web console in a real browser: Debian's Chromium, headless, driven
//! through chromedriver (WebDriver, the fantoccini client) against a
//! running server loaded by a real Kafka producer (confluent-kafka) and a
//! consumer group. Each page is loaded and the figures it shows are
//! compared with the system tables read over pgwire; the SQL editor runs
//! a query and an error, and streams a SUBSCRIBE that shows rows produced
//! after it started. A screenshot of each page is kept under
//! `target/tmp/console/` (CARGO_TARGET_TMPDIR).
//!
//! Also, without a browser: the console's API under password
//! authentication (401 without or with wrong credentials, a role's
//! privileges applied).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_driver() -> Driver {
    assert!(
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists(),
        "the console test drives Debian's Chromium: apt-get install chromium chromium-driver (scripts/test installs them)"
    );
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap()
}

/// The text of the first element `css` matches once it exists and `ok`
/// accepts it (pages refresh themselves; wait for the figure wanted).
async fn text_when(c: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
        {
            if ok(&t) {
                return t;
            }
            last = t;
        }
        assert!(
            Instant::now() < deadline,
            "{css}: last seen {last:?} in\n{}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text(c: &Client, css: &str) -> String {
    text_when(c, css, |_| true).await
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{name}: {} bytes",
        png.len()
    );
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// One value of a query over pgwire, as text.
async fn one(pg: &tokio_postgres::Client, sql: &str) -> String {
    let rows = pg.simple_query(sql).await.unwrap();
    for m in rows {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            return r.get(0).unwrap_or("NULL").to_string();
        }
    }
    panic!("{sql}: no row");
}

fn load(server: &TestServer) {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/metrics_load.py"
        ))
        .env("BOOTSTRAP", &server.addr)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "confluent-kafka is required (scripts/test installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn console_pages_show_what_the_system_tables_hold() {
    let driver = start_driver();
    let server = TestServer::start();
    let base = format!("http://{}", server.http_addr);
    let profile = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pg = rt.block_on(common::slt::connect(server.pg_addr));
    rt.block_on(pg.batch_execute(
        "CREATE STREAM plays (user_id int, game text) WITH (topic = 'plays', partitions = 2);
         CREATE MATERIALIZED VIEW per_game AS SELECT game, count(*) AS n FROM plays GROUP BY game",
    ))
    .unwrap();
    load(&server);
    rt.block_on(async {
        // The view has every play before pages are compared with it.
        let deadline = Instant::now() + Duration::from_secs(20);
        while one(&pg, "SELECT coalesce(sum(n), 0) FROM per_game").await != "100" {
            assert!(Instant::now() < deadline, "the view never held 100 plays");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let c = browser(&driver, profile.path()).await;

        // Overview: the totals are the system tables' figures; the charts
        // sample.
        c.goto(&format!("{base}/console/")).await.unwrap();
        let produced = one(
            &pg,
            "SELECT sum(p.end_offset) FROM eddy_catalog.partitions p \
             JOIN eddy_catalog.topics t ON p.topic = t.name WHERE NOT t.internal",
        )
        .await;
        assert_eq!(produced, "101");
        let css = "[data-total=records_produced] .value";
        assert_eq!(text_when(&c, css, |t| t == produced).await, produced);
        let lag = one(&pg, "SELECT sum(lag) FROM eddy_catalog.consumer_groups").await;
        assert_eq!(text(&c, "[data-total=consumer_lag] .value").await, lag);
        assert_eq!(text(&c, "[data-total=views] .value").await, "1");
        assert_eq!(text(&c, "[data-total=decode_errors] .value").await, "1");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = c
                .find(Locator::Css("#chart-lag"))
                .await
                .unwrap()
                .attr("data-samples")
                .await
                .unwrap()
                .unwrap_or_default();
            if n.parse::<u32>().unwrap_or(0) >= 3 {
                break;
            }
            assert!(Instant::now() < deadline, "the charts took no samples");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(text(&c, "[data-metric=lag]").await, format!("{lag} records"));
        screenshot(&c, "overview").await;

        // Topics.
        c.goto(&format!("{base}/console/#/topics")).await.unwrap();
        let row = "#topics tr[data-key=plays]";
        for (col, sql) in [
            ("partitions", "SELECT partitions FROM eddy_catalog.topics WHERE name = 'plays'"),
            ("records", "SELECT sum(end_offset - start_offset) FROM eddy_catalog.partitions WHERE topic = 'plays'"),
            ("end_offset", "SELECT sum(end_offset) FROM eddy_catalog.partitions WHERE topic = 'plays'"),
            ("size_bytes", "SELECT sum(size_bytes) FROM eddy_catalog.partitions WHERE topic = 'plays'"),
        ] {
            let want = one(&pg, sql).await;
            assert_eq!(text(&c, &format!("{row} [data-col={col}]")).await, want, "{col}");
        }
        screenshot(&c, "topics").await;

        // One topic: its partitions, and the message browser.
        c.find(Locator::Css(&format!("{row} a")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        for p in 0..2 {
            let want = one(
                &pg,
                &format!(
                    "SELECT end_offset FROM eddy_catalog.partitions WHERE topic = 'plays' AND \"partition\" = {p}"
                ),
            )
            .await;
            let css = format!("#partitions tr[data-key=\"{p}\"] [data-col=end_offset]");
            assert_eq!(text(&c, &css).await, want);
        }
        // Partition 0 holds the even plays, play 0 first; its newest page
        // ends with play 98 at offset 49.
        let newest = text(&c, "#message-table tbody tr:last-child [data-col=value]").await;
        assert_eq!(newest, r#"{"user_id": 98, "game": "g0"}"#);
        let offset = c.find(Locator::Css("#msg-offset")).await.unwrap();
        offset.send_keys("0").await.unwrap();
        c.find(Locator::Css("#msg-load")).await.unwrap().click().await.unwrap();
        let first = text_when(&c, "#message-table tr[data-key=\"0\"] [data-col=value]", |_| true).await;
        assert_eq!(first, r#"{"user_id": 0, "game": "g0"}"#);
        assert_eq!(text(&c, "#message-table tr[data-key=\"0\"] [data-col=key]").await, "0");
        screenshot(&c, "topic").await;

        // Consumer groups: `readers` committed 20 of partition 0.
        c.goto(&format!("{base}/console/#/groups")).await.unwrap();
        let want = one(
            &pg,
            "SELECT lag FROM eddy_catalog.consumer_groups WHERE group_id = 'readers' AND \"partition\" = 0",
        )
        .await;
        let css = "[data-group=readers] tr[data-key=\"readers/plays/0\"] [data-col=lag]";
        assert_eq!(text(&c, css).await, want);
        assert_eq!(text(&c, "[data-group=readers] [data-col=committed_offset]").await, "20");
        screenshot(&c, "groups").await;

        // Relations, with their SQL.
        c.goto(&format!("{base}/console/#/relations")).await.unwrap();
        let rows = one(&pg, "SELECT \"rows\" FROM eddy_catalog.materialized_views WHERE name = 'per_game'").await;
        assert_eq!(text(&c, "#relations tr[data-key=per_game] [data-col=rows]").await, rows);
        let create = text(&c, "#relations tr[data-key=per_game] [data-col=create_sql]").await;
        let want = one(&pg, "SELECT create_sql FROM eddy_catalog.relations WHERE name = 'per_game'").await;
        assert_eq!(create, want);
        assert_eq!(text(&c, "#relations tr[data-key=plays] [data-col=kind]").await, "stream");
        screenshot(&c, "relations").await;

        // The SQL editor: a query, then an error.
        c.goto(&format!("{base}/console/#/sql")).await.unwrap();
        let editor = c.find(Locator::Css("#sql")).await.unwrap();
        editor.clear().await.unwrap();
        editor
            .send_keys("SELECT game, n FROM per_game ORDER BY game")
            .await
            .unwrap();
        c.find(Locator::Css("#run")).await.unwrap().click().await.unwrap();
        text_when(&c, "#tag", |t| t == "SELECT 7").await;
        let shown = c
            .execute(
                "return [...document.querySelectorAll('#result-table tbody tr')]
                   .map(r => [...r.cells].map(td => td.textContent).join('|'));",
                vec![],
            )
            .await
            .unwrap();
        let want: Vec<String> = pg
            .query("SELECT game, n FROM per_game ORDER BY game", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| format!("{}|{}", r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect();
        assert_eq!(shown, json!(want));
        screenshot(&c, "sql").await;
        editor.clear().await.unwrap();
        editor.send_keys("SELECT * FROM nope").await.unwrap();
        c.find(Locator::Css("#run")).await.unwrap().click().await.unwrap();
        let error = text(&c, "#error").await;
        assert_eq!(error, "42P01: relation \"nope\" does not exist");

        // SUBSCRIBE: the snapshot, then a change produced after it began.
        editor.clear().await.unwrap();
        editor
            .send_keys("SELECT sum(n) AS total FROM per_game")
            .await
            .unwrap();
        c.find(Locator::Css("#subscribe")).await.unwrap().click().await.unwrap();
        let first = text(&c, "#subscribe-table tr[data-row=\"1\"] [data-col=total]").await;
        assert_eq!(first, "100");
        pg.batch_execute("INSERT INTO plays VALUES (1000, 'g1'), (1001, 'g2')")
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rows: Value = c
                .execute(
                    "return [...document.querySelectorAll('#subscribe-table tbody tr')]
                       .map(r => [...r.cells].map(td => td.textContent).slice(1).join('|'));",
                    vec![],
                )
                .await
                .unwrap();
            let rows: Vec<String> = serde_json::from_value(rows).unwrap();
            if rows.contains(&"1|102".to_string()) {
                assert!(rows.contains(&"-1|100".to_string()), "{rows:?}");
                break;
            }
            assert!(Instant::now() < deadline, "the subscription showed {rows:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        screenshot(&c, "subscribe").await;
        c.find(Locator::Css("#stop")).await.unwrap().click().await.unwrap();
        c.close().await.unwrap();
    });
}

/// A request to the HTTP listener: (status code, body).
fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    body: &str,
) -> (u16, String) {
    use base64::Engine as _;
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = auth.map_or(String::new(), |(u, p)| {
        format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    });
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

#[test]
fn console_api_runs_as_the_role_that_logs_in() {
    let server = TestServer::start_with(eddy::server::ServeArgs {
        pg_auth: eddy::server::pg::PgAuth::ScramSha256,
        superuser: "admin".into(),
        superuser_password: Some("secret".into()),
        ..Default::default()
    });
    let addr = server.http_addr;
    let sql = |auth, q: &str| {
        request(
            addr,
            "POST",
            "/api/sql",
            auth,
            &json!({ "sql": q }).to_string(),
        )
    };
    let admin = Some(("admin", "secret"));
    let (code, body) = sql(
        admin,
        "CREATE TABLE t (a int); INSERT INTO t VALUES (1), (2); CREATE ROLE reader LOGIN PASSWORD 'r'; CREATE TABLE hidden (b int)",
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(sql(None, "SELECT 1").0, 401);
    assert_eq!(sql(Some(("admin", "wrong")), "SELECT 1").0, 401);
    assert_eq!(sql(Some(("nobody", "secret")), "SELECT 1").0, 401);
    let (code, body) = sql(admin, "GRANT SELECT ON t TO reader");
    assert_eq!(code, 200, "{body}");
    let reader = Some(("reader", "r"));
    let (code, body) = sql(reader, "SELECT a FROM t ORDER BY a");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["results"][0]["rows"], json!([["1"], ["2"]]));
    assert_eq!(v["results"][0]["columns"][0]["name"], "a");
    assert_eq!(v["results"][0]["tag"], "SELECT 2");
    let (code, body) = sql(reader, "SELECT * FROM hidden");
    assert_eq!(code, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "42501", "{body}");
    let (code, body) = sql(reader, "INSERT INTO t VALUES (3)");
    assert_eq!(
        (
            code,
            &serde_json::from_str::<Value>(&body).unwrap()["error"]["code"]
        ),
        (400, &json!("42501"))
    );
    // The message browser needs SELECT on a relation over the topic.
    let topic = |table: &str| {
        let (_, body) = sql(
            admin,
            &format!("SELECT topic FROM eddy_catalog.relations WHERE name = '{table}'"),
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        v["results"][0]["rows"][0][0].as_str().unwrap().to_string()
    };
    let (code, body) = request(
        addr,
        "GET",
        &format!("/api/topics/{}/messages", topic("hidden")),
        reader,
        "",
    );
    assert_eq!(code, 403, "{body}");
    let (code, body) = request(
        addr,
        "GET",
        &format!("/api/topics/{}/messages?offset=0", topic("t")),
        reader,
        "",
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = request(
        addr,
        "GET",
        &format!("/api/topics/{}/messages?offset=0", topic("t")),
        admin,
        "",
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["messages"].as_array().unwrap().len(), 2, "{body}");
    // Syntax errors keep PostgreSQL's code.
    let (code, body) = sql(admin, "SELEC 1");
    assert_eq!(code, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        "42601"
    );
    // The pages themselves are served.
    let (code, body) = request(addr, "GET", "/console/", None, "");
    assert_eq!(code, 200);
    assert!(body.contains("/console/app.js"), "{body}");
}
