import sys

from jaxsr.cli.main import main

sys.exit(main())
