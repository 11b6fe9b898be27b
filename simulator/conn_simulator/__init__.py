"""conn_simulator."""
