"""SQLAlchemy 2 (ORM and Core, through psycopg) and pandas against eddy, as
an application writes them: create_engine, metadata.create_all, inspect,
sessions that commit and roll back, pandas read_sql / to_sql.
PGHOST / PGPORT name the server."""

import os

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

url = f"postgresql+psycopg://eddy@{os.environ['PGHOST']}:{os.environ['PGPORT']}/eddy"
engine = sa.create_engine(url)


class Base(DeclarativeBase):
    pass


class Game(Base):
    __tablename__ = "games"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str]
    viewers: Mapped[int]


Base.metadata.create_all(engine)
inspector = sa.inspect(engine)
print("tables", inspector.get_table_names())
print("columns", [c["name"] for c in inspector.get_columns("games")])

with Session(engine) as s:
    s.add_all([Game(id=1, name="Fortnite", viewers=450), Game(id=2, name="Just Chatting", viewers=2000)])
    s.commit()
with Session(engine) as s:
    s.add(Game(id=3, name="never", viewers=1))
    s.rollback()
with Session(engine) as s:
    print("orm", [(g.id, g.name, g.viewers) for g in s.query(Game).order_by(Game.id)])
    top = s.scalars(sa.select(Game.name).where(Game.viewers > 1000)).all()
    print("core", top)

with engine.connect() as c:
    c.execute(sa.text("CREATE MATERIALIZED VIEW total AS SELECT sum(viewers) AS v FROM games"))
    c.commit()
    print("view", c.execute(sa.text("SELECT v FROM total")).scalar_one())

print(pd.read_sql("SELECT id, name FROM games ORDER BY id", engine).to_string(index=False))
pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]}).to_sql("frame", engine, index=False)
print(pd.read_sql("SELECT * FROM frame ORDER BY x", engine).to_string(index=False))
