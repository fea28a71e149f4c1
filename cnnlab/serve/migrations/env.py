"""Alembic's environment for the competition tables: run by `cnnlab.serve.db.open_database` on
every start, on the connection it passes (online mode only; the schema is cnnlab.serve.db's)."""

from alembic import context

from cnnlab.serve.db import VERSION_TABLE, Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, version_table=VERSION_TABLE,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
