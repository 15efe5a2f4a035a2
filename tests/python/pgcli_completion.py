"""pgcli's completion refresh against eddy: the catalog queries pgcli runs
at connect (through its own PGExecute, over psycopg) to autocomplete
schemas, tables, views, columns, databases, types and functions. PGHOST / PGPORT name
the server. Prints one line per query: its name and what it found."""

import os

from pgcli.pgexecute import PGExecute

e = PGExecute("eddy", "eddy", None, os.environ["PGHOST"], os.environ["PGPORT"], None)
print("search_path", list(e.search_path()))
print("schemata", sorted(e.schemata()))
print("tables", sorted(t for s, t in e.tables() if s == "public"))
print("views", sorted(t for s, t in e.views() if s == "public"))
cols = [(t, c) for s, t, c, *_ in e.table_columns() if s == "public"]
print("table_columns", sorted(cols))
vcols = [(t, c) for s, t, c, *_ in e.view_columns() if s == "public"]
print("view_columns", sorted(vcols))
print("databases", sorted(e.databases()))
print("datatypes", len(list(e.datatypes())))
print("foreignkeys", len(list(e.foreignkeys())))
print("functions", any(f.func_name == "abs" for f in e.functions()))
