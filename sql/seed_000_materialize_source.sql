-- The seed note 000 pipeline as a Materialize user wrote it: a connection
-- and a source over the Kafka topic the Python producer writes (here two
-- events inserted through SQL, as `eddy produce` or any Kafka client would
-- write them), JSON taken apart with jsonb operators in a view, and an
-- incremental materialized view over that.
CREATE CONNECTION kafka_conn TO KAFKA (BROKER 'localhost:9092');

CREATE SOURCE twitch_streams
  FROM KAFKA CONNECTION kafka_conn (TOPIC 'twitch-streams')
  FORMAT JSON;

INSERT INTO twitch_streams VALUES
  ('{"game_id": "509658", "game_name": "Just Chatting", "id": "s1", "viewer_count": 1200, "tags": ["English"]}'),
  ('{"game_id": "33214", "game_name": "Fortnite", "id": "s3", "viewer_count": 450}');

SELECT data FROM twitch_streams ORDER BY data->>'id';

CREATE VIEW v_twitch_stream AS
SELECT data->>'game_id' AS game_id,
       data->>'game_name' AS game_name,
       data->>'id' AS id,
       (data->>'viewer_count')::int AS viewer_count,
       data->'tags' AS tags
FROM twitch_streams;

CREATE MATERIALIZED VIEW mv_agg_stream_game AS
SELECT game_id, game_name, COUNT(id) AS cnt_streams, SUM(viewer_count) AS agg_viewer_cnt
FROM v_twitch_stream
WHERE game_id IS NOT NULL
GROUP BY game_id, game_name;

INSERT INTO twitch_streams VALUES
  ('{"game_id": "509658", "game_name": "Just Chatting", "id": "s2", "viewer_count": 800}');

SELECT * FROM mv_agg_stream_game ORDER BY game_id;

SELECT id, tags, jsonb_typeof(tags) FROM v_twitch_stream WHERE tags IS NOT NULL;

COPY (SELECT * FROM mv_agg_stream_game ORDER BY game_id) TO STDOUT;

SHOW SOURCES;
