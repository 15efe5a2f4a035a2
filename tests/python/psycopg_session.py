"""A psycopg 3 session against eddy, as an application would write it:
server-side parameters (the extended protocol), executemany, a materialized
view read back, COPY in both directions, and errors with SQLSTATEs.
PGHOST / PGPORT name the server."""

import os
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

conninfo = f"host={os.environ['PGHOST']} port={os.environ['PGPORT']} user=eddy dbname=eddy"

with psycopg.connect(conninfo, autocommit=True) as conn:
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE twitch (game_id text, game_name text, id text, viewer_count int)"
        )
        cur.execute(
            "CREATE MATERIALIZED VIEW per_game AS SELECT game_id, game_name, "
            "COUNT(id) AS streams, SUM(viewer_count) AS viewers FROM twitch "
            "WHERE game_id IS NOT NULL GROUP BY game_id, game_name"
        )
        cur.executemany(
            "INSERT INTO twitch VALUES (%s, %s, %s, %s)",
            [
                ("32982", "Grand Theft Auto V", "s1", 100),
                ("32982", "Grand Theft Auto V", "s2", 50),
                ("21779", "League of Legends", "s3", 70),
                (None, "unknown", "s4", 5),
            ],
        )
        cur.execute("UPDATE twitch SET viewer_count = %s WHERE id = %s", (80, "s3"))
        print("updated", cur.rowcount)
        cur.execute("DELETE FROM twitch WHERE id = %s", ("s2",))
        print("deleted", cur.rowcount)
        cur.execute(
            "SELECT game_name, streams, viewers FROM per_game WHERE viewers > %s ORDER BY game_name",
            (0,),
        )
        for row in cur.fetchall():
            print("row", row)
        with cur.copy("COPY twitch FROM STDIN") as copy:
            copy.write_row(("21779", "League of Legends", "s5", 30))
            copy.write_row(("509658", "Just Chatting", "s6", 1000))
        buf = bytearray()
        with cur.copy("COPY (SELECT * FROM per_game ORDER BY game_id) TO STDOUT") as copy:
            for data in copy:
                buf += data
        print("copy", bytes(buf).decode().replace("\t", "|").splitlines())
        # Binary COPY: every type in psycopg's own binary encoding, read
        # back as PostgreSQL prints it.
        cur.execute(
            "CREATE TABLE typed (i2 smallint, i4 int, i8 bigint, f4 real, f8 double precision, "
            "ok boolean, name text, doc jsonb, id uuid, raw bytea, amount numeric(10,3), "
            "d date, ts timestamp, tstz timestamptz, iv interval)"
        )
        types = ["int2", "int4", "int8", "float4", "float8", "bool", "text", "jsonb", "uuid",
                 "bytea", "numeric", "date", "timestamp", "timestamptz", "interval"]
        with cur.copy("COPY typed FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            copy.write_row((
                -2, 40000, 2**40, 1.5, -0.25, True, "h\u00e9llo", Jsonb({"a": [1, 2]}),
                UUID("12345678-1234-5678-1234-567812345678"), b"\x00\xff", Decimal("-12345.678"),
                date(2024, 2, 29), datetime(2024, 1, 2, 3, 4, 5, 678901),
                datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
                timedelta(days=3, seconds=4, microseconds=5),
            ))
            copy.write_row((None,) * len(types))
        buf = bytearray()
        with cur.copy("COPY (SELECT * FROM typed ORDER BY i2 NULLS LAST) TO STDOUT") as copy:
            for data in copy:
                buf += data
        for line in bytes(buf).decode().splitlines():
            print("binary", line.replace("\t", "|"))
        try:
            with cur.copy("COPY typed (i2) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int4"])
                copy.write_row((70000,))
        except psycopg.Error as e:
            print("binary error", e.sqlstate)
        cur.execute("SELECT count(*) FROM typed")
        print("typed", cur.fetchone()[0])
        cur.execute("SHOW MATERIALIZED VIEWS")
        print("views", [(r[0], r[1], r[4]) for r in cur.fetchall()])
        try:
            cur.execute("SELECT * FROM no_such_table WHERE x = %s", (1,))
        except psycopg.Error as e:
            print("error", e.sqlstate)
        cur.execute("SELECT count(*) FROM twitch")
        print("count", cur.fetchone()[0])

# psycopg's default mode: statements run inside a transaction block until
# commit() or rollback(); another connection sees nothing before commit().
with psycopg.connect(conninfo) as conn, psycopg.connect(conninfo, autocommit=True) as other:
    row = "INSERT INTO twitch VALUES (%s, %s, %s, %s)"
    conn.execute(row, ("1", "tx", "t1", 1))
    conn.rollback()
    conn.execute(row, ("1", "tx", "t2", 2))
    conn.execute(row, ("1", "tx", "t3", 3))
    seen = other.execute("SELECT count(*) FROM twitch WHERE game_name = 'tx'").fetchone()[0]
    conn.commit()
    after = other.execute("SELECT id FROM twitch WHERE game_name = 'tx' ORDER BY id").fetchall()
    print("transaction", seen, after)
