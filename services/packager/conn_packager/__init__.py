"""conn_packager."""
