import sys

from personvl.cli import main

sys.exit(main())
