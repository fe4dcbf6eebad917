import sys

from campus.cli import main

sys.exit(main())
