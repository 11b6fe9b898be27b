"""Conn benchmarks: `make bench` / `python -m bench [names...]`."""
