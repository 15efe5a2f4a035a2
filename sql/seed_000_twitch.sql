-- The seed note 000 pipeline (Materialize-era Kafka notes), run through psql:
-- a table, a view over it, an incremental materialized view grouping by
-- game, changes that move rows between games, and the export with COPY.
CREATE TABLE twitch_data_1 (game_id string, game_name string, id string, viewer_count int);

INSERT INTO twitch_data_1 VALUES
  ('509658', 'Just Chatting', 's1', 1200),
  ('509658', 'Just Chatting', 's2', 800),
  ('33214', 'Fortnite', 's3', 450),
  (NULL, 'Unlisted', 's4', 10);

CREATE VIEW v_twitch_stream AS SELECT * FROM twitch_data_1;

CREATE MATERIALIZED VIEW mv_agg_stream_game AS
SELECT game_id,
       game_name,
       COUNT(id) AS cnt_streams,
       SUM(viewer_count) AS agg_viewer_cnt
FROM v_twitch_stream
WHERE game_id IS NOT NULL
GROUP BY game_id, game_name;

SELECT * FROM mv_agg_stream_game ORDER BY game_id;

-- The view follows every change without being asked.
INSERT INTO twitch_data_1 VALUES ('21779', 'League of Legends', 's5', 3000);
DELETE FROM twitch_data_1 WHERE id = 's2';
UPDATE twitch_data_1 SET game_id = '33214', game_name = 'Fortnite' WHERE id = 's4';

SELECT * FROM mv_agg_stream_game ORDER BY game_id;

COPY (SELECT * FROM mv_agg_stream_game) TO STDOUT;

SHOW MATERIALIZED VIEWS;
