import sys

from conn_localstack.cli import main

sys.exit(main())
