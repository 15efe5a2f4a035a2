-- COPY … TO STDOUT in text and CSV, with NULLs, tabs and booleans.
CREATE TABLE t (id int, name text, score double precision, ok bool);
INSERT INTO t VALUES (1, 'a b', 1.5, true), (2, NULL, 2.0, false), (3, 'tab	here', -0.25, NULL);
COPY (SELECT * FROM t ORDER BY id) TO STDOUT;
COPY (SELECT id, name FROM t ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER true);
COPY t TO STDOUT WITH (FORMAT csv);
-- Array columns: PostgreSQL's {…} text form in and out.
CREATE TABLE tags (id int, nums int[], names text[]);
COPY tags FROM STDIN;
1	{1,2,3}	{a,"b c"}
2	{}	\N
3	{NULL,4}	{"x,y"}
\.
COPY (SELECT * FROM tags ORDER BY id) TO STDOUT;
COPY (SELECT * FROM tags ORDER BY id) TO STDOUT WITH (FORMAT csv);
