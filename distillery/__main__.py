import sys

from distillery.cli import main

sys.exit(main())
