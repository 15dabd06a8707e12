import sys

from mailconsole.cli import main

sys.exit(main())
