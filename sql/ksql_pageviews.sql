-- ksqlDB's page-views quickstart, in ksqlDB's own spelling, through psql:
-- a stream keyed by user over a topic, a persistent stream query that
-- filters it and a persistent table query that counts per user, each
-- writing its own topic, then pull and push reads of the results.
SET 'auto.offset.reset' = 'earliest';

CREATE STREAM PAGEVIEWS (USERID VARCHAR KEY, VIEWTIME BIGINT, PAGEID VARCHAR)
  WITH (KAFKA_TOPIC = 'pageviews', VALUE_FORMAT = 'JSON', PARTITIONS = 1);

INSERT INTO PAGEVIEWS (USERID, VIEWTIME, PAGEID) VALUES ('User_1', 1, 'Page_1');
INSERT INTO PAGEVIEWS (USERID, VIEWTIME, PAGEID) VALUES ('User_2', 2, 'Page_3');
INSERT INTO PAGEVIEWS (USERID, VIEWTIME, PAGEID) VALUES ('User_1', 3, 'Page_3');

CREATE STREAM PAGEVIEWS_PAGE3 AS
  SELECT USERID, VIEWTIME FROM PAGEVIEWS WHERE PAGEID = 'Page_3' EMIT CHANGES;

CREATE TABLE VIEWS_PER_USER AS
  SELECT USERID, COUNT(*) AS VIEWS FROM PAGEVIEWS GROUP BY USERID EMIT CHANGES;

INSERT INTO PAGEVIEWS (USERID, VIEWTIME, PAGEID) VALUES ('User_3', 4, 'Page_3');
FLUSH;

SELECT * FROM PAGEVIEWS_PAGE3 ORDER BY VIEWTIME;

-- A pull query on the table, by its key.
SELECT USERID, VIEWS FROM VIEWS_PER_USER WHERE USERID = 'User_1';

-- Each query writes a topic, named as ksqlDB names it (tests/ksql.rs reads
-- them with a Kafka consumer).
SHOW TOPICS;

DROP TABLE VIEWS_PER_USER;
DROP STREAM PAGEVIEWS_PAGE3;
DROP STREAM PAGEVIEWS;
