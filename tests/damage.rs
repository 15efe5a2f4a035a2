#![allow(clippy::unwrap_used)]
//! A damaged file must not hide the records before the damage (issue 22).
//!
//! Each test damages one kind of file of a real data directory in each of
//! the ways the issue lists — random bytes appended, bytes flipped in the
//! middle, the file cut at every batch (or entry) boundary and inside one,
//! the file deleted — after a clean stop and after a crash, then opens it
//! (the log, then the real server) and checks that every record before the
//! damage is served, that nothing else is served wrong, that the damage is
//! reported (`Log::damage`, `eddy_catalog.log_damage`) and that `eddy
//! verify` / `eddy repair` say what they cut and cut it.

mod common;
#[path = "common/serve.rs"]
mod serve_child;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use eddy::log::batch::{self, BatchHeader, NewRecord};
use eddy::log::{Action, Damage, Durability, Log, LogError, LogOptions, LogStore, repair};
use eddy::server::{self, Handle, ServeArgs};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const T: &str = "t";
const SMALL: &[(&str, &str)] = &[("segment.bytes", "1024"), ("index.interval.bytes", "100")];
const PID: i64 = 7;
const TS0: i64 = 1_700_000_000_000;

// ---------------------------------------------------------------- helpers

/// Run `f` until it is not refused by the directory's lock (for a moment):
/// while another test thread spawns a process, the child holds a copy of
/// every descriptor, lock included, until it execs.
fn unlocked<T>(mut f: impl FnMut() -> Result<T, LogError>) -> Result<T, LogError> {
    for _ in 0..100 {
        match f() {
            Err(LogError::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other,
        }
    }
    f()
}

/// Open the log: whatever the files hold, it must open.
fn open(dir: &Path) -> Arc<Log> {
    unlocked(|| {
        Log::open(
            dir,
            LogOptions {
                cleaner_interval: None,
            },
        )
    })
    .unwrap_or_else(|e| panic!("open refused: {e}"))
}

fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A batch from idempotent producer `PID`, epoch 0, first sequence `seq`.
fn idempotent(seq: i32, recs: &[NewRecord]) -> BytesMut {
    let mut b = batch::encode(recs).unwrap();
    b[43..51].copy_from_slice(&PID.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn value(offset: i64) -> Bytes {
    Bytes::from(format!(
        "v{offset}-{}",
        "p".repeat((offset % 5) as usize * 9)
    ))
}

/// What was written: the value at each offset, and the last batch (to
/// retry it).
#[derive(Clone)]
struct Model {
    values: Vec<Bytes>,
    last_batch: BytesMut,
    next_seq: i32,
}

/// Write 40 idempotent batches of 1–3 records into `t` (small segments:
/// several of them), then close cleanly or drop the log (a crash).
fn populate(dir: &Path, clean: bool) -> Model {
    let log = open(dir);
    log.create_topic(T, 1, cfg(SMALL)).unwrap();
    let mut values = Vec::new();
    let mut seq = 0;
    let mut last_batch = BytesMut::new();
    for b in 0..40 {
        let base = values.len() as i64;
        let recs: Vec<NewRecord> = (0..1 + b % 3)
            .map(|i| NewRecord {
                key: Some(Bytes::from(format!("k{}", (base + i) % 7))),
                value: Some(value(base + i)),
                timestamp: TS0 + (base + i) * 10,
                headers: vec![],
            })
            .collect();
        let bytes = idempotent(seq, &recs);
        let info = log.append(T, 0, bytes.clone(), Durability::Os).unwrap();
        assert_eq!(info.base_offset, base);
        seq += recs.len() as i32;
        values.extend(recs.into_iter().map(|r| r.value.unwrap()));
        last_batch = bytes;
    }
    if clean {
        log.close().unwrap();
    }
    Model {
        values,
        last_batch,
        next_seq: seq,
    }
}

/// A copy of a data directory (cheaper than writing it again per case).
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn part_dir(dir: &Path, topic: &str) -> PathBuf {
    dir.join("topics").join(topic).join("0")
}

fn seg_file(dir: &Path, base: i64, ext: &str) -> PathBuf {
    part_dir(dir, T).join(format!("{base:020}.{ext}"))
}

fn segment_bases(dir: &Path, topic: &str) -> Vec<i64> {
    let mut v: Vec<i64> = fs::read_dir(part_dir(dir, topic))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

/// (byte position, base offset, length) of every batch of a segment file.
fn batches(path: &Path) -> Vec<(u64, i64, u64)> {
    let bytes = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let h = BatchHeader::parse(&bytes[pos..]).unwrap();
        out.push((pos as u64, h.base_offset, h.total_len() as u64));
        pos += h.total_len();
    }
    out
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

/// The ways a file is damaged.
#[derive(Debug, Clone, Copy)]
enum Harm {
    /// Random bytes appended.
    Append(usize),
    /// Every bit of the byte at this position flipped.
    Flip(u64),
    /// The file cut to this length.
    Cut(u64),
    Delete,
}

fn harm(path: &Path, h: Harm, seed: u64) {
    match h {
        Harm::Append(n) => {
            let mut rng = StdRng::seed_from_u64(seed);
            let garbage: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            let f = OpenOptions::new().append(true).open(path).unwrap();
            f.write_all_at(&garbage, 0).unwrap();
            f.sync_all().unwrap();
        }
        Harm::Flip(at) => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap();
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, at).unwrap();
            f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
            f.sync_all().unwrap();
        }
        Harm::Cut(len) => {
            let f = OpenOptions::new().write(true).open(path).unwrap();
            f.set_len(len).unwrap();
            f.sync_all().unwrap();
        }
        Harm::Delete => fs::remove_file(path).unwrap(),
    }
}

/// The records a consumer gets reading `topic`-0 from the start, batch by
/// batch with its CRC check, until the end or the first error.
fn served(log: &Log, topic: &str) -> Vec<(i64, Bytes)> {
    let (start, end) = log.offsets(topic, 0).unwrap();
    let mut out = Vec::new();
    let mut off = start;
    'reads: while off < end {
        let Ok(rr) = log.read(topic, 0, off, 4096) else {
            break;
        };
        let bytes = rr.records;
        if bytes.is_empty() {
            break;
        }
        let mut pos = 0;
        let mut next = off;
        while pos < bytes.len() {
            let Ok(h) = BatchHeader::parse(&bytes[pos..]) else {
                break 'reads;
            };
            let len = h.total_len().min(bytes.len() - pos);
            let Ok(recs) = batch::decode(bytes.slice(pos..pos + len)) else {
                break 'reads;
            };
            for r in recs {
                if r.offset >= off {
                    out.push((r.offset, r.value.unwrap_or_default()));
                }
            }
            next = next.max(h.next_offset());
            pos += len;
        }
        if next <= off {
            break;
        }
        off = next;
    }
    out
}

/// Every record below `upto` is served, and every record served is the one
/// written at its offset, in order.
fn assert_served(ctx: &str, got: &[(i64, Bytes)], values: &[Bytes], upto: i64) {
    for w in got.windows(2) {
        assert!(w[0].0 < w[1].0, "{ctx}: offsets out of order");
    }
    // (Offsets past `values` hold what a test appended after the damage.)
    for (o, v) in got.iter().filter(|(o, _)| (*o as usize) < values.len()) {
        assert_eq!(&values[*o as usize], v, "{ctx}: offset {o} served wrong");
    }
    let have: Vec<i64> = got
        .iter()
        .map(|(o, _)| *o)
        .take_while(|o| *o < upto)
        .collect();
    let want: Vec<i64> = (0..upto).collect();
    assert_eq!(have, want, "{ctx}: records before the damage not served");
}

fn damage_on<'a>(log: &'a [Damage], file: &Path) -> Vec<&'a Damage> {
    log.iter().filter(|d| d.file == file).collect()
}

/// Appends work (at the end) unless the partition is fenced, in which case
/// they are refused with `Damaged` naming the damage.
fn check_appends(ctx: &str, log: &Log) {
    let p = log.partition(T, 0).unwrap();
    let end = p.log_end();
    let r = log.append(
        T,
        0,
        batch::encode(&[NewRecord {
            key: Some(Bytes::from_static(b"new")),
            value: Some(Bytes::from_static(b"after damage")),
            timestamp: TS0,
            headers: vec![],
        }])
        .unwrap(),
        Durability::Os,
    );
    match (p.fenced(), r) {
        (Some(d), Err(LogError::Damaged { file, .. })) => assert_eq!(file, d.file, "{ctx}"),
        (None, Ok(info)) => assert_eq!(info.base_offset, end, "{ctx}"),
        (f, r) => panic!("{ctx}: fenced {f:?}, append gave {r:?}"),
    }
}

/// The real server over `dir` (ports chosen by the OS).
fn serve(dir: &Path) -> (tokio::runtime::Runtime, Handle) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let args = ServeArgs {
        kafka_addr: "127.0.0.1:0".into(),
        pg_addr: "127.0.0.1:0".into(),
        registry_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        ..ServeArgs::default()
    };
    let mut tries = 0;
    let handle = loop {
        // (See `unlocked`.)
        match rt.block_on(server::start(dir.to_path_buf(), args.clone())) {
            Err(e) if e.to_string().contains("locked") && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => break r.unwrap_or_else(|e| panic!("server does not start: {e}")),
        }
    };
    (rt, handle)
}

/// Rows of a query over pgwire, tab-joined.
fn query(rt: &tokio::runtime::Runtime, h: &Handle, sql: &str) -> Result<Vec<String>, String> {
    rt.block_on(async {
        let c = common::slt::connect(h.pg_addr).await;
        let msgs = c.simple_query(sql).await.map_err(|e| e.to_string())?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL").to_string())
                        .collect::<Vec<_>>()
                        .join("\t"),
                ),
                _ => None,
            })
            .collect())
    })
}

/// Start the server over `dir`: it serves `t` up to `upto` and lists the
/// damage it found in `eddy_catalog.log_damage`.
fn check_server(ctx: &str, dir: &Path, values: &[Bytes], upto: i64) {
    let (rt, h) = serve(dir);
    assert_served(ctx, &served(&h.log, T), values, upto);
    let rows = query(
        &rt,
        &h,
        "SELECT topic, partition, file, position, action FROM eddy_catalog.log_damage",
    )
    .unwrap();
    assert_eq!(rows.len(), h.log.damage().len(), "{ctx}: {rows:?}");
    for d in h.log.damage() {
        assert!(
            rows.iter().any(
                |r| r.contains(&d.file.display().to_string()) && r.ends_with(d.action.as_str())
            ),
            "{ctx}: {d} missing from {rows:?}"
        );
    }
    rt.block_on(h.shutdown()).unwrap();
}

/// Run the `eddy` binary over `dir` (retrying while the directory's lock
/// is held by a copy in a process another test thread is spawning).
fn eddy(dir: &Path, args: &[&str]) -> (bool, String) {
    for _ in 0..100 {
        let (ok, out) = eddy_once(dir, args);
        if ok || !out.contains("is locked by another eddy process") {
            return (ok, out);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    eddy_once(dir, args)
}

fn eddy_once(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ------------------------------------------------------------------ tests

/// The issue's own case: after a clean stop, 777 random bytes appended to
/// the last segment. Open cuts them with a warning naming file, byte and
/// offset, counts them in `log_damage`, and every record is served — by the
/// CLI and by the server.
#[test]
fn garbage_after_a_clean_stop_is_cut_and_everything_served() {
    let dir = tempfile::tempdir().unwrap();
    let m = populate(dir.path(), true);
    let last = *segment_bases(dir.path(), T).last().unwrap();
    let path = seg_file(dir.path(), last, "log");
    let len = file_len(&path);
    harm(&path, Harm::Append(777), 1);

    let (ok, out) = eddy(dir.path(), &["verify"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("truncated {} at byte {len}", path.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "repair would truncate {} at byte {len} (777 bytes)",
            path.display()
        )),
        "{out}"
    );

    let (ok, out) = eddy(
        dir.path(),
        &["--log", "warn", "consume", T, "--from-beginning"],
    );
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with('v')).collect();
    assert_eq!(lines.len(), m.values.len(), "{out}");
    assert!(out.contains("damaged log file"), "{out}");
    assert!(out.contains(&path.display().to_string()), "{out}");
    assert_eq!(file_len(&path), len);

    // Cut already: the server starts clean and serves everything.
    check_server(
        "after consume",
        dir.path(),
        &m.values,
        m.values.len() as i64,
    );
    let (ok, out) = eddy(dir.path(), &["verify"]);
    assert!(ok, "{out}");
}

/// Segments, the last and an older one, after a clean stop and after a
/// crash: appended garbage, a flipped byte mid-segment, cuts at every batch
/// boundary and inside every batch, deletion. Every record before the damage
/// is served; a damaged tail of the last segment is cut; damage with valid
/// data after it fences the partition (appends refused, bytes kept); the
/// server starts and lists the damage.
#[test]
fn last_segment_damage_keeps_every_record_before_it() {
    segment_damage(true);
}

/// As above, for an older segment (fsynced at its roll, so open trusts it
/// after a crash too).
#[test]
fn older_segment_damage_keeps_every_record_before_it() {
    segment_damage(false);
}

fn segment_damage(victim_last: bool) {
    let mut servers = 0;
    for clean in [false, true] {
        // Written once; every case damages a copy.
        let probe = tempfile::tempdir().unwrap();
        let m0 = populate(probe.path(), clean);
        let bases = segment_bases(probe.path(), T);
        assert!(bases.len() >= 4, "{bases:?}");
        let vi = if victim_last { bases.len() - 1 } else { 1 };
        let victim = bases[vi];
        let next_base = bases.get(vi + 1).copied();
        let bs = batches(&seg_file(probe.path(), victim, "log"));
        assert!(bs.len() >= 3, "{bs:?}");
        let len = bs.last().map(|b| b.0 + b.2).unwrap();
        let mid = bs[bs.len() / 2];

        let mut cases: Vec<(String, Harm, i64)> = vec![
            (
                "append".into(),
                Harm::Append(777),
                next_base.unwrap_or(i64::MAX),
            ),
            ("flip mid".into(), Harm::Flip(mid.0 + mid.2 / 2), mid.1),
            ("delete".into(), Harm::Delete, victim),
        ];
        for (pos, base, blen) in &bs {
            cases.push((format!("cut at {pos}"), Harm::Cut(*pos), *base));
            cases.push((
                format!("cut inside {pos}"),
                Harm::Cut(pos + blen / 2),
                *base,
            ));
        }
        for (what, h, upto) in cases {
            let ctx = format!("clean={clean} last={victim_last} segment {victim}: {what}");
            let dir = tempfile::tempdir().unwrap();
            copy_dir(probe.path(), dir.path());
            let m = m0.clone();
            let end0 = m.values.len() as i64;
            let upto = upto.min(end0);
            let path = seg_file(dir.path(), victim, "log");
            harm(&path, h, victim as u64);
            let log = open(dir.path());
            let damage = log.damage();
            let got = served(&log, T);
            assert_served(&ctx, &got, &m.values, upto);
            let on_victim = damage_on(&damage, &path);
            match (h, victim_last) {
                (Harm::Append(_), true) => {
                    // The tail is cut, everything served, writable.
                    assert_eq!(log.offsets(T, 0).unwrap().1, end0, "{ctx}");
                    assert!(
                        on_victim.iter().any(|d| d.action == Action::Truncated
                            && d.position == len
                            && d.offset == end0
                            && d.bytes == 777),
                        "{ctx}: {damage:?}"
                    );
                    assert_eq!(file_len(&path), len, "{ctx}");
                }
                (Harm::Append(_), false) => {
                    // Valid segments follow: fenced at the garbage,
                    // nothing cut.
                    assert_eq!(log.offsets(T, 0).unwrap().1, upto, "{ctx}");
                    assert!(
                        on_victim.iter().any(|d| d.action == Action::Fenced
                            && d.position == len
                            && d.offset == upto),
                        "{ctx}: {damage:?}"
                    );
                    assert_eq!(file_len(&path), len + 777, "{ctx}");
                }
                (Harm::Flip(_), _) => {
                    // The last segment after a crash is scanned at open:
                    // fenced there. A segment open trusted (fsynced
                    // before a roll or a clean stop) serves up to the
                    // damaged batch, whose CRC the consumer checks.
                    if victim_last && !clean {
                        assert!(
                            on_victim.iter().any(|d| d.action == Action::Fenced
                                && d.position == mid.0
                                && d.offset == mid.1),
                            "{ctx}: {damage:?}"
                        );
                    }
                    for d in &on_victim {
                        assert_eq!(d.position, mid.0, "{ctx}: {d}");
                    }
                }
                (Harm::Cut(c), true) => {
                    // Cut at a boundary: a shorter log; inside a batch: a
                    // torn tail, cut back to the boundary.
                    assert_eq!(log.offsets(T, 0).unwrap().1, upto, "{ctx}");
                    assert!(file_len(&path) <= c, "{ctx}");
                }
                (Harm::Cut(_), false) => {
                    assert!(!damage.is_empty(), "{ctx}: nothing reported");
                }
                (Harm::Delete, false) => {
                    // The records of the other segments are all served.
                    let after: Vec<i64> =
                        got.iter().map(|r| r.0).filter(|o| *o >= victim).collect();
                    let want: Vec<i64> = (next_base.unwrap()..end0).collect();
                    assert_eq!(after, want, "{ctx}");
                    assert!(!damage.is_empty(), "{ctx}: nothing reported");
                }
                _ => {}
            }
            // A fenced partition keeps every byte.
            if let Some(d) = log.partition(T, 0).unwrap().fenced() {
                assert!(d.file.exists(), "{ctx}");
                assert_eq!(d.action, Action::Fenced, "{ctx}");
            }
            check_appends(&ctx, &log);
            drop(log);
            // The server starts over it (a subset: it costs more).
            if !what.starts_with("cut") || what == format!("cut inside {}", mid.0) {
                // What follows the damage may have been replaced by the
                // append above: only the records before it are checked.
                check_server(&ctx, dir.path(), &m.values[..upto as usize], upto);
                servers += 1;
            }
        }
    }
    assert!(servers >= 8);
}

/// `eddy verify` reports damage open does not look for (a flipped byte in a
/// segment fsynced before a clean stop) and what repair would cut; `eddy
/// repair` prints the cuts, saves the cut bytes and removed segments, cuts,
/// and leaves a log that verifies clean, serves everything before the
/// damage, and takes appends. While eddy runs, both refuse (the lock).
#[test]
fn verify_and_repair_cut_what_they_report() {
    let dir = tempfile::tempdir().unwrap();
    let m = populate(dir.path(), true);
    let bases = segment_bases(dir.path(), T);
    let victim = bases[1];
    let path = seg_file(dir.path(), victim, "log");
    let bs = batches(&path);
    let (pos, base, blen) = bs[1];
    harm(&path, Harm::Flip(pos + blen - 2), 0);
    let later: Vec<PathBuf> = bases[2..]
        .iter()
        .map(|b| seg_file(dir.path(), *b, "log"))
        .collect();

    {
        let _running = open(dir.path());
        let (ok, out) = eddy_once(dir.path(), &["verify"]);
        assert!(!ok && out.contains("locked"), "{out}");
        let (ok, out) = eddy_once(dir.path(), &["repair"]);
        assert!(!ok && out.contains("locked"), "{out}");
    }

    // Open trusts the segment (fsynced before the clean stop); the read that
    // reaches the damage serves everything before it, then fails naming it.
    let (ok, out) = eddy(dir.path(), &["consume", T, "--from-beginning"]);
    assert!(!ok, "{out}");
    let values: Vec<&str> = out.lines().filter(|l| l.starts_with('v')).collect();
    assert_eq!(values.len() as i64, base, "{out}");
    assert!(
        out.contains(&format!("{} at byte {pos}", path.display())),
        "{out}"
    );

    let (ok, out) = eddy(dir.path(), &["verify"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("{} at byte {pos} (offset {base})", path.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "repair would truncate {} at byte {pos}",
            path.display()
        )),
        "{out}"
    );
    for l in &later {
        assert!(
            out.contains(&format!("repair would remove segment {}", l.display())),
            "{out}"
        );
    }
    // verify changed nothing.
    for l in &later {
        assert!(l.exists());
    }

    let len = file_len(&path);
    let (ok, out) = eddy(dir.path(), &["repair"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "repair will truncate {} at byte {pos}",
            path.display()
        )),
        "{out}"
    );
    assert!(out.contains("saved what was cut in"), "{out}");
    assert_eq!(file_len(&path), pos);
    for l in &later {
        assert!(!l.exists(), "{} still there", l.display());
    }
    // The cut bytes and the removed segments were kept aside.
    let saved: PathBuf = out
        .lines()
        .find_map(|l| l.strip_prefix("saved what was cut in "))
        .unwrap()
        .into();
    let tail = saved
        .join(T)
        .join("0")
        .join(format!("{victim:020}.log.from-byte-{pos}"));
    assert_eq!(file_len(&tail), len - pos);
    for l in &later {
        assert!(
            saved
                .join(T)
                .join("0")
                .join(l.file_name().unwrap())
                .exists()
        );
    }

    let (ok, out) = eddy(dir.path(), &["verify"]);
    assert!(ok, "{out}");
    let log = open(dir.path());
    assert!(log.damage().is_empty(), "{:?}", log.damage());
    assert_eq!(log.offsets(T, 0).unwrap().1, base);
    assert_served("repaired", &served(&log, T), &m.values, base);
    check_appends("repaired", &log);
}

/// A fenced partition (damage mid-segment after a crash) is repaired the
/// same way, and the server is running meanwhile: the rest of the topic and
/// other topics work.
#[test]
fn fenced_partition_leaves_the_rest_running_until_repaired() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        log.create_topic("u", 1, BTreeMap::new()).unwrap();
        log.close().unwrap();
    }
    // A crash: the last segment is scanned at the next start.
    let m = populate(dir.path(), false);
    let last = *segment_bases(dir.path(), T).last().unwrap();
    let path = seg_file(dir.path(), last, "log");
    let bs = batches(&path);
    let (pos, base, _) = bs[0];
    harm(&path, Harm::Flip(pos + 30), 0);
    {
        let (rt, h) = serve(dir.path());
        assert_served("server", &served(&h.log, T), &m.values, base);
        let rows = query(
            &rt,
            &h,
            "SELECT topic, partition, position, \"offset\", action FROM eddy_catalog.log_damage",
        )
        .unwrap();
        assert_eq!(rows, vec![format!("t\t0\t{pos}\t{base}\tfenced")]);
        let rows = query(
            &rt,
            &h,
            "SELECT end_offset FROM eddy_catalog.partitions WHERE topic = 't'",
        )
        .unwrap();
        assert_eq!(rows, vec![base.to_string()]);
        h.log
            .append(
                "u",
                0,
                batch::encode(&[NewRecord {
                    key: None,
                    value: Some(Bytes::from_static(b"fine")),
                    timestamp: TS0,
                    headers: vec![],
                }])
                .unwrap(),
                Durability::Fsync,
            )
            .unwrap();
        assert!(matches!(
            h.log.append(T, 0, m.last_batch.clone(), Durability::Os),
            Err(LogError::Damaged { .. })
        ));
        rt.block_on(h.shutdown()).unwrap();
    }
    let r = unlocked(|| repair::repair(dir.path())).unwrap();
    assert!(r.remaining.is_empty(), "{:?}", r.remaining);
    let log = open(dir.path());
    assert!(log.damage().is_empty(), "{:?}", log.damage());
    assert_eq!(log.offsets(T, 0).unwrap().1, base);
    check_appends("repaired", &log);
    assert_eq!(served(&log, "u").len(), 1);
}

/// `.index` and `.timeindex` of an older segment and of the last one (after
/// a clean stop, when it has them): garbage appended, a flipped byte, cut at
/// every entry boundary and inside an entry, deleted. Never a reason not to
/// open or not to serve: every record is served, by offset from every
/// offset, and by timestamp; `eddy verify` reports every change it can see.
#[test]
fn index_damage_is_rebuilt_and_everything_served() {
    index_damage("index", 8);
}

/// As above, for `.timeindex` files.
#[test]
fn time_index_damage_is_rebuilt_and_everything_served() {
    index_damage("timeindex", 12);
}

fn index_damage(ext: &str, entry: u64) {
    for victim_last in [false, true] {
        let probe = tempfile::tempdir().unwrap();
        let m0 = populate(probe.path(), true);
        let bases = segment_bases(probe.path(), T);
        let victim = if victim_last {
            *bases.last().unwrap()
        } else {
            bases[1]
        };
        let len = file_len(&seg_file(probe.path(), victim, ext));
        assert!(len >= entry, "{ext} of {victim} is empty");
        let mut cases = vec![
            ("append".to_string(), Harm::Append(50)),
            ("flip".to_string(), Harm::Flip(len / 2)),
            ("delete".to_string(), Harm::Delete),
        ];
        for at in (0..len).step_by(entry as usize) {
            cases.push((format!("cut at {at}"), Harm::Cut(at)));
            cases.push((format!("cut inside {at}"), Harm::Cut(at + entry / 2)));
        }
        for (what, h) in cases {
            let ctx = format!("{ext} of {victim} (last={victim_last}): {what}");
            let dir = tempfile::tempdir().unwrap();
            copy_dir(probe.path(), dir.path());
            let m = m0.clone();
            let path = seg_file(dir.path(), victim, ext);
            harm(&path, h, 3);
            let report = unlocked(|| repair::inspect(dir.path())).unwrap();
            let at_boundary = matches!(h, Harm::Cut(c) if c % entry == 0);
            if !at_boundary {
                assert!(
                    report
                        .findings
                        .iter()
                        .any(|f| f.damage.file == seg_file(dir.path(), victim, "index")
                            && f.damage.action == Action::Rebuilt),
                    "{ctx}: verify saw nothing: {:?}",
                    report.findings
                );
            }
            let log = open(dir.path());
            let n = m.values.len() as i64;
            assert_served(&ctx, &served(&log, T), &m.values, n);
            for o in 0..n {
                let rr = log.read(T, 0, o, 1).unwrap();
                let recs = batch::decode(rr.records).unwrap();
                let r = recs.iter().find(|r| r.offset == o).unwrap();
                assert_eq!(r.value.as_ref(), Some(&m.values[o as usize]), "{ctx}");
            }
            let detected = log.damage().iter().any(|d| d.action == Action::Rebuilt);
            if detected || at_boundary {
                for o in 0..n {
                    assert_eq!(
                        log.offset_for_timestamp(T, 0, TS0 + o * 10 - 5).unwrap(),
                        Some((o, TS0 + o * 10)),
                        "{ctx}"
                    );
                }
            }
            check_appends(&ctx, &log);
            log.close().unwrap();
            drop(log);
            // Rebuilt at open for good, or (an entry wrong but
            // plausible) by repair.
            if !unlocked(|| repair::inspect(dir.path())).unwrap().is_clean() {
                unlocked(|| repair::repair(dir.path())).unwrap();
                let report = unlocked(|| repair::inspect(dir.path())).unwrap();
                assert!(report.is_clean(), "{ctx}: {:?}", report.findings);
            }
        }
    }
}

/// Producer snapshots: damaged ones are ignored and the idempotent state is
/// rebuilt from the log — a retry of the last batch is still a duplicate
/// with its original offsets.
#[test]
fn producer_snapshot_damage_is_rebuilt() {
    for clean in [true, false] {
        let probe = tempfile::tempdir().unwrap();
        let m0 = populate(probe.path(), clean);
        let snaps = |d: &Path| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = fs::read_dir(part_dir(d, T))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "snapshot"))
                .collect();
            v.sort();
            v
        };
        let newest = snaps(probe.path()).pop().unwrap();
        let len = file_len(&newest);
        let mut cases = vec![
            ("append".to_string(), Harm::Append(40)),
            ("flip".to_string(), Harm::Flip(len / 2)),
            ("delete".to_string(), Harm::Delete),
        ];
        for at in [0, 4, 8, len / 2, len - 4, len - 1] {
            cases.push((format!("cut at {at}"), Harm::Cut(at)));
        }
        for (what, h) in cases {
            let ctx = format!("clean={clean}: {what}");
            let dir = tempfile::tempdir().unwrap();
            copy_dir(probe.path(), dir.path());
            let m = m0.clone();
            let path = part_dir(dir.path(), T).join(newest.file_name().unwrap());
            harm(&path, h, 5);
            let log = open(dir.path());
            let n = m.values.len() as i64;
            assert_served(&ctx, &served(&log, T), &m.values, n);
            if !matches!(h, Harm::Delete) {
                assert!(
                    log.damage()
                        .iter()
                        .any(|d| d.file == path && d.action == Action::Rebuilt),
                    "{ctx}: {:?}",
                    log.damage()
                );
            }
            let again = log
                .append(T, 0, m.last_batch.clone(), Durability::Os)
                .unwrap();
            assert!(again.duplicate, "{ctx}");
            let next = log
                .append(
                    T,
                    0,
                    idempotent(
                        m.next_seq,
                        &[NewRecord {
                            key: Some(Bytes::from_static(b"k")),
                            value: Some(Bytes::from_static(b"next")),
                            timestamp: TS0,
                            headers: vec![],
                        }],
                    ),
                    Durability::Os,
                )
                .unwrap();
            assert_eq!(next.base_offset, n, "{ctx}");
            drop(log);
            if what == "flip" {
                check_server(&ctx, dir.path(), &m.values, n);
            }
        }
    }
}

/// The recovery point (Kafka's recovery-point checkpoint): damage only
/// makes the next open scan more.
#[test]
fn recovery_point_damage_only_costs_a_rescan() {
    for clean in [true, false] {
        let probe = tempfile::tempdir().unwrap();
        let m0 = populate(probe.path(), clean);
        let len = file_len(&part_dir(probe.path(), T).join("recovery-point"));
        let mut cases = vec![
            ("append".to_string(), Harm::Append(9)),
            ("flip".to_string(), Harm::Flip(len / 2)),
            ("delete".to_string(), Harm::Delete),
        ];
        for at in 0..len {
            cases.push((format!("cut at {at}"), Harm::Cut(at)));
        }
        for (what, h) in cases {
            let ctx = format!("clean={clean}: {what}");
            let dir = tempfile::tempdir().unwrap();
            copy_dir(probe.path(), dir.path());
            let m = m0.clone();
            harm(&part_dir(dir.path(), T).join("recovery-point"), h, 11);
            let log = open(dir.path());
            let n = m.values.len() as i64;
            assert_eq!(log.offsets(T, 0).unwrap().1, n, "{ctx}");
            assert_served(&ctx, &served(&log, T), &m.values, n);
            check_appends(&ctx, &log);
        }
    }
}

/// `topic.json`: garbage appended, a flipped byte, cut short, deleted. The
/// log and the server open; the topic opens from its partition directories,
/// serves every record, refuses appends and config changes (its config is
/// unknown) and is reported; other topics work. `eddy repair` rewrites it.
#[test]
fn topic_json_damage_opens_the_topic_read_only() {
    let make = |dir: &Path| -> Vec<Bytes> {
        let log = open(dir);
        log.create_topic(T, 2, cfg(&[("retention.ms", "86400000")]))
            .unwrap();
        log.create_topic("u", 1, BTreeMap::new()).unwrap();
        let values: Vec<Bytes> = (0..20).map(value).collect();
        for (i, v) in values.iter().enumerate() {
            let r = NewRecord {
                key: None,
                value: Some(v.clone()),
                timestamp: TS0 + i as i64,
                headers: vec![],
            };
            log.append(T, 0, batch::encode(&[r]).unwrap(), Durability::Os)
                .unwrap();
        }
        log.close().unwrap();
        values
    };
    let probe = tempfile::tempdir().unwrap();
    let values0 = make(probe.path());
    let len = file_len(&probe.path().join("topics").join(T).join("topic.json"));
    let mut cases = vec![
        ("append".to_string(), Harm::Append(30)),
        ("flip".to_string(), Harm::Flip(len / 2)),
        ("delete".to_string(), Harm::Delete),
    ];
    for at in [0, 1, len / 2, len - 1] {
        cases.push((format!("cut at {at}"), Harm::Cut(at)));
    }
    for (what, h) in cases {
        let ctx = what.clone();
        let dir = tempfile::tempdir().unwrap();
        copy_dir(probe.path(), dir.path());
        let values = values0.clone();
        let meta = dir.path().join("topics").join(T).join("topic.json");
        harm(&meta, h, 13);
        {
            let log = open(dir.path());
            let damage = log.damage();
            assert!(
                damage
                    .iter()
                    .any(|d| d.file == meta && d.action == Action::Fenced && d.partition.is_none()),
                "{ctx}: {damage:?}"
            );
            assert_eq!(log.topic(T).unwrap().partition_count(), 2, "{ctx}");
            assert_served(&ctx, &served(&log, T), &values, 20);
            assert!(
                matches!(
                    log.append(
                        T,
                        1,
                        batch::encode(&[NewRecord {
                            key: None,
                            value: None,
                            timestamp: 0,
                            headers: vec![]
                        }])
                        .unwrap(),
                        Durability::Os
                    ),
                    Err(LogError::Damaged { .. })
                ),
                "{ctx}"
            );
            let mut change = BTreeMap::new();
            change.insert("retention.ms".to_string(), Some("1".to_string()));
            assert!(log.alter_topic_config(T, &change).is_err(), "{ctx}");
            log.append(
                "u",
                0,
                batch::encode(&[NewRecord {
                    key: None,
                    value: Some(Bytes::from_static(b"x")),
                    timestamp: 0,
                    headers: vec![],
                }])
                .unwrap(),
                Durability::Os,
            )
            .unwrap();
            // Never cleaned: its retention is unknown.
            log.clean_now().unwrap();
            assert_served(&ctx, &served(&log, T), &values, 20);
            log.close().unwrap();
        }
        check_server(&ctx, dir.path(), &values, 20);
        let (ok, out) = eddy(dir.path(), &["verify"]);
        assert!(!ok && out.contains("rewrite"), "{ctx}: {out}");
        let (ok, out) = eddy(dir.path(), &["repair"]);
        assert!(ok, "{ctx}: {out}");
        let log = open(dir.path());
        assert!(log.damage().is_empty(), "{ctx}: {:?}", log.damage());
        assert_eq!(log.topic(T).unwrap().partition_count(), 2);
        // Repair turns time retention off until an operator sets it again.
        assert_eq!(
            log.topic(T)
                .unwrap()
                .overrides()
                .get("retention.ms")
                .map(String::as_str),
            Some("-1")
        );
        assert_served(&ctx, &served(&log, T), &values, 20);
        log.append(
            T,
            1,
            batch::encode(&[NewRecord {
                key: None,
                value: Some(Bytes::from_static(b"x")),
                timestamp: 0,
                headers: vec![],
            }])
            .unwrap(),
            Durability::Os,
        )
        .unwrap();
    }
}

/// The catalog topic `__eddy_catalog` and the dataflow checkpoint, damaged
/// after a clean stop: the server starts; the objects defined before the
/// damage are there and their data is served; a damaged checkpoint is
/// ignored (everything rebuilt from the log).
#[test]
fn catalog_and_checkpoint_damage_leave_the_server_serving() {
    const SETUP: &[&str] = &[
        "CREATE TABLE a (x int)",
        "INSERT INTO a VALUES (1), (2), (3)",
        "CREATE MATERIALIZED VIEW a_sum AS SELECT sum(x) AS s FROM a",
        "CREATE TABLE b (y int)",
        "INSERT INTO b VALUES (10)",
        "CREATE MATERIALIZED VIEW b_count AS SELECT count(*) AS n FROM b",
    ];
    let make = |dir: &Path| {
        let (rt, h) = serve(dir);
        for s in SETUP {
            query(&rt, &h, s).unwrap();
        }
        rt.block_on(h.shutdown()).unwrap();
    };
    let probe = tempfile::tempdir().unwrap();
    make(probe.path());
    let cat_dir = probe.path().join("topics").join("__eddy_catalog").join("0");
    let cat_log = cat_dir.join(format!("{:020}.log", 0));
    let cat_batches = batches(&cat_log);
    assert_eq!(cat_batches.len(), 4, "{cat_batches:?}");
    let ckpt = probe.path().join("checkpoints").join("dataflows.ckpt");
    let ckpt_len = file_len(&ckpt);

    // (file, harm, catalog objects defined before the damage)
    let mut cases: Vec<(String, PathBuf, Harm, usize)> = vec![
        (
            "catalog: append".into(),
            cat_log.clone(),
            Harm::Append(777),
            4,
        ),
        (
            "catalog: flip in entry 2".into(),
            cat_log.clone(),
            Harm::Flip(cat_batches[2].0 + cat_batches[2].2 / 2),
            2,
        ),
        ("catalog: delete".into(), cat_log.clone(), Harm::Delete, 0),
        (
            "checkpoint: append".into(),
            ckpt.clone(),
            Harm::Append(99),
            4,
        ),
        (
            "checkpoint: flip".into(),
            ckpt.clone(),
            Harm::Flip(ckpt_len / 2),
            4,
        ),
        ("checkpoint: delete".into(), ckpt.clone(), Harm::Delete, 4),
        (
            "checkpoint: cut inside".into(),
            ckpt.clone(),
            Harm::Cut(ckpt_len / 3),
            4,
        ),
    ];
    for (i, (pos, _, blen)) in cat_batches.iter().enumerate() {
        cases.push((
            format!("catalog: cut at entry {i}"),
            cat_log.clone(),
            Harm::Cut(*pos),
            i,
        ));
        cases.push((
            format!("catalog: cut inside entry {i}"),
            cat_log.clone(),
            Harm::Cut(pos + blen / 2),
            i,
        ));
    }
    for at in [0, 8, 16, ckpt_len - 4] {
        cases.push((
            format!("checkpoint: cut at {at}"),
            ckpt.clone(),
            Harm::Cut(at),
            4,
        ));
    }
    for (what, file, h, defined) in cases {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(probe.path(), dir.path());
        let rel = file.strip_prefix(probe.path()).unwrap();
        harm(&dir.path().join(rel), h, 17);
        let (rt, h) = serve(dir.path());
        let objects = query(
            &rt,
            &h,
            "SELECT name FROM eddy_catalog.relations ORDER BY name",
        )
        .unwrap();
        let want: Vec<&str> = ["a", "a_sum", "b", "b_count"][..defined].to_vec();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(objects, want, "{what}");
        if defined >= 2 {
            assert_eq!(
                query(&rt, &h, "SELECT s FROM a_sum").unwrap(),
                vec!["6"],
                "{what}"
            );
            assert_eq!(
                query(&rt, &h, "SELECT x FROM a ORDER BY x").unwrap(),
                vec!["1", "2", "3"],
                "{what}"
            );
        }
        if defined == 4 {
            assert_eq!(
                query(&rt, &h, "SELECT n FROM b_count").unwrap(),
                vec!["1"],
                "{what}"
            );
        }
        // The tables' own topics are untouched and served over Kafka's API.
        let (start, end) = h.log.offsets("__table_a", 0).unwrap();
        assert_eq!((start, end), (0, 3), "{what}");
        rt.block_on(h.shutdown()).unwrap();
    }
}

/// A crash (kill -9 of a real server) after writes, then garbage on the
/// last segment and a flip in an older one of another topic: the server
/// restarts and serves what precedes each damage.
#[test]
fn server_restarts_after_kill_9_and_damage() {
    let dir = tempfile::tempdir().unwrap();
    let m = populate(dir.path(), true);
    let child = serve_child::Serve::start(env!("CARGO_BIN_EXE_eddy"), dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = common::slt::connect(child.pg).await;
        c.simple_query("CREATE TABLE k (x int)").await.unwrap();
        c.simple_query("INSERT INTO k VALUES (1), (2)")
            .await
            .unwrap();
    });
    child.kill9();
    let last = *segment_bases(dir.path(), T).last().unwrap();
    harm(&seg_file(dir.path(), last, "log"), Harm::Append(777), 19);
    let (rt, h) = serve(dir.path());
    assert_served(
        "after kill -9",
        &served(&h.log, T),
        &m.values,
        m.values.len() as i64,
    );
    assert_eq!(
        query(&rt, &h, "SELECT x FROM k ORDER BY x").unwrap(),
        vec!["1", "2"]
    );
    let rows = query(&rt, &h, "SELECT action, bytes FROM eddy_catalog.log_damage").unwrap();
    assert_eq!(rows, vec!["truncated\t777"]);
    rt.block_on(h.shutdown()).unwrap();
}

/// Damage in a segment open trusts (after a clean stop, before its last
/// index entry) is found by the read that reaches it. That read fences the
/// partition, and every eddy reader's loop (`Partition::records`) ends
/// there: here the consumer-offsets store, replayed by `Log::open` — which
/// used to fail on it — and a plain scan of `t`.
#[test]
fn damage_found_by_a_read_fences_and_readers_stop_there() {
    let dir = tempfile::tempdir().unwrap();
    let m = populate(dir.path(), true);
    {
        let log = open(dir.path());
        for g in 0..100 {
            let c = eddy::log::CommittedOffset {
                offset: g,
                leader_epoch: -1,
                metadata: "m".repeat(40),
                commit_timestamp: TS0,
            };
            log.commit_offsets(&format!("group-{g:03}"), &[(T.to_string(), 0, c)])
                .unwrap();
        }
        log.close().unwrap();
    }
    // Offsets: a flip in the record data of an early batch (CRC-covered).
    let offsets_log = part_dir(dir.path(), "__consumer_offsets").join(format!("{:020}.log", 0));
    let ob = batches(&offsets_log);
    assert!(
        file_len(&part_dir(dir.path(), "__consumer_offsets").join(format!("{:020}.index", 0))) > 0
    );
    harm(&offsets_log, Harm::Flip(ob[3].0 + ob[3].2 - 3), 0);
    // t: the same in an older segment.
    let victim = segment_bases(dir.path(), T)[1];
    let path = seg_file(dir.path(), victim, "log");
    let (pos, base, blen) = batches(&path)[1];
    harm(&path, Harm::Flip(pos + blen - 3), 0);

    let log = open(dir.path());
    // The groups committed before the damaged record are there.
    let groups = log.groups();
    assert!(groups.contains(&"group-000".to_string()), "{groups:?}");
    assert!(!groups.contains(&"group-099".to_string()), "{groups:?}");
    assert!(
        log.partition("__consumer_offsets", 0)
            .unwrap()
            .fenced()
            .is_some()
    );

    let p = log.partition(T, 0).unwrap();
    assert!(p.fenced().is_none());
    let mut records = p.records(0, p.log_end(), 1 << 20);
    let mut got = Vec::new();
    for batch in records.by_ref() {
        got.extend(batch.unwrap().into_iter().map(|r| r.offset));
    }
    assert!(records.damaged());
    assert_eq!(records.position(), base);
    assert_eq!(got, (0..base).collect::<Vec<_>>());
    let d = p.fenced().expect("fenced by the read");
    assert_eq!((d.file, d.position, d.offset), (path, pos, base));
    check_appends("found by a read", &log);
    assert_served("found by a read", &served(&log, T), &m.values, base);
    drop(log);
    // The server starts over it too.
    check_server("server", dir.path(), &m.values, base);
}
