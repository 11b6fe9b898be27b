"""Adapters for Conn's ports (core/conn_core/ports.py): simulator and real ones.

Choose by configuration: `build_adapters(AdapterSettings())`; see adapters/README.md.
"""

from conn_adapters.config import Adapters, AdapterSettings, build_adapters

__all__ = ["AdapterSettings", "Adapters", "build_adapters"]
