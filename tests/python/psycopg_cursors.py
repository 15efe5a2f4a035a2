"""psycopg 3 named (server-side) cursors against eddy: DECLARE, the cursor
described as a portal, FETCH in pieces, with parameters and jsonb/uuid
values. PGHOST / PGPORT name the server."""

import os
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

conninfo = f"host={os.environ['PGHOST']} port={os.environ['PGPORT']} user=eddy dbname=eddy"

with psycopg.connect(conninfo) as conn:
    conn.execute("CREATE TABLE events (id int, u uuid, doc jsonb)")
    conn.commit()
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO events VALUES (%s, %s, %s)",
            [(i, UUID(int=i), Jsonb({"n": i, "even": i % 2 == 0})) for i in range(1, 8)],
        )
    conn.commit()
    with conn.cursor(name="big") as cur:
        cur.execute("SELECT id, u, doc FROM events WHERE id > %s ORDER BY id", (2,))
        print("description", [d.name for d in cur.description])
        print("one", cur.fetchone())
        print("many", cur.fetchmany(2))
        print("rest", [r[0] for r in cur.fetchall()])
    conn.commit()
    with conn.cursor(name="iter") as cur:
        cur.itersize = 2
        cur.execute("SELECT doc->>'n' AS n FROM events WHERE doc @> '{\"even\": true}' ORDER BY id")
        print("iter", [r[0] for r in cur])
    conn.commit()
