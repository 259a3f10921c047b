import sys

from heapsnap.cli import main

sys.exit(main())
