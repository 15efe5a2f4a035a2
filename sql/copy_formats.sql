-- COPY … TO STDOUT in text and CSV, with NULLs, tabs and booleans.
CREATE TABLE t (id int, name text, score double, ok bool);
INSERT INTO t VALUES (1, 'a b', 1.5, true), (2, NULL, 2.0, false), (3, 'tab	here', -0.25, NULL);
COPY (SELECT * FROM t ORDER BY id) TO STDOUT;
COPY (SELECT id, name FROM t ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER true);
COPY t TO STDOUT WITH (FORMAT csv);
