"""asyncpg against eddy: a pool (whose reset calls pg_advisory_unlock_all),
parameters and results of jsonb, uuid, numeric and timestamptz in asyncpg's
binary formats. PGHOST / PGPORT name the server."""

import asyncio
import datetime
import decimal
import json
import os
import uuid


async def main():
    import asyncpg

    dsn = f"postgresql://eddy@{os.environ['PGHOST']}:{os.environ['PGPORT']}/eddy"

    async def init(conn):
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, init=init)
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    async with pool.acquire() as c:
        await c.execute("CREATE TABLE orders (id uuid, doc jsonb, amount numeric, at timestamptz)")
        await c.execute(
            "INSERT INTO orders VALUES ($1, $2, $3, $4)",
            u,
            {"game": "Fortnite", "tags": ["a", "b"]},
            decimal.Decimal("12.5"),
            datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        )
    async with pool.acquire() as c:
        row = await c.fetchrow("SELECT id, doc, amount, at FROM orders WHERE id = $1", u)
        print("row", row["id"], row["doc"], row["amount"], row["at"].isoformat())
        print("field", await c.fetchval("SELECT doc->>'game' FROM orders"))
        print("param", await c.fetchval("SELECT $1::jsonb ->> 'k'", {"k": "v"}))
        print("count", await c.fetchval("SELECT count(*) FROM orders"))
    await pool.close()


asyncio.run(main())
