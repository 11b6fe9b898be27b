"""`python -m conn_cli` runs the `conn` CLI."""

from conn_cli.main import app

app(prog_name="conn")
