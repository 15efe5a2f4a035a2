#!/usr/bin/env python3
"""W3 comparison: DuckDB recomputing the seed 000 group-by from scratch.

Usage: w3_duckdb.py EVENTS KEYS
Builds, in an in-memory database, the same rows benches/views_w3.rs appends
to eddy's stream (event i: game_id 'g' || i % KEYS, game_name
'game ' || i % KEYS, id i as text, viewer_count i % 1000), then times
`CREATE OR REPLACE TABLE r AS SELECT <the view's query>` three times and
prints the median in seconds.
"""
import statistics
import sys
import time

import duckdb

events, keys = int(sys.argv[1]), int(sys.argv[2])
con = duckdb.connect()
con.execute(
    f"""CREATE TABLE twitch AS SELECT
          'g' || (i % {keys})::VARCHAR AS game_id,
          'game ' || (i % {keys})::VARCHAR AS game_name,
          i::VARCHAR AS id,
          (i % 1000)::INTEGER AS viewer_count
        FROM range({events}) t(i)"""
)
times = []
for _ in range(3):
    t = time.perf_counter()
    con.execute(
        """CREATE OR REPLACE TABLE r AS
           SELECT game_id, game_name, COUNT(id) AS cnt_streams,
                  SUM(viewer_count) AS agg_viewer_cnt
           FROM twitch WHERE game_id IS NOT NULL GROUP BY game_id, game_name"""
    )
    times.append(time.perf_counter() - t)
n = con.execute("SELECT count(*) FROM r").fetchone()[0]
assert n == min(keys, events), n
print(statistics.median(times))
