"""conn_cli."""
