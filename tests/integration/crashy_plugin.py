"""A local-stack plugin for tests/integration/test_supervisor.py: a component that runs
for a moment and then exits 3, every time (a crash loop)."""

from __future__ import annotations

import sys

from conn_localstack.procs import ProcessSpec


def process_specs() -> list[ProcessSpec]:
    code = "import sys, time; time.sleep(0.3); sys.exit(3)"
    return [ProcessSpec(name="crashy", argv=[sys.executable, "-c", code], startup_timeout=10)]
