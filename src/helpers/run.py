"""`python -m helpers.run`: the suite's command line (see helpers.suite.runner)."""
import sys

from helpers.suite.runner import main

if __name__ == "__main__":
    sys.exit(main())
