import sys

from cotbench.cli import main

sys.exit(main())
