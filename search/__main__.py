"""`python -m search` runs the `tabslim` command, as the installed script does."""

import sys

from search.commands import main

sys.exit(main())
