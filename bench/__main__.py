"""``python -m bench``: run the benchmark scenarios and write the results."""

import sys

from bench.run import main

sys.exit(main())
