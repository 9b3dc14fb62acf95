"""`python -m kafka_jobs` runs the command line."""

import sys

from kafka_jobs.cli import main

sys.exit(main())
