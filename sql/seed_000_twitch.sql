-- The seed note 000 pipeline (Materialize-era Kafka notes), run through psql.
-- The aggregate is a plain view until incremental materialized views land.
CREATE TABLE twitch_data_1 (game_id string, game_name string, id string, viewer_count int);

INSERT INTO twitch_data_1 VALUES
  ('509658', 'Just Chatting', 's1', 1200),
  ('509658', 'Just Chatting', 's2', 800),
  ('33214', 'Fortnite', 's3', 450),
  (NULL, 'Unlisted', 's4', 10);

CREATE VIEW v_twitch_stream AS SELECT * FROM twitch_data_1;

CREATE VIEW mv_agg_stream_game AS
SELECT game_id,
       game_name,
       COUNT(id) AS cnt_streams,
       SUM(viewer_count) AS agg_viewer_cnt
FROM v_twitch_stream
WHERE game_id IS NOT NULL
GROUP BY game_id, game_name;

SELECT * FROM mv_agg_stream_game ORDER BY game_id;

COPY (SELECT * FROM mv_agg_stream_game ORDER BY game_id) TO STDOUT;
