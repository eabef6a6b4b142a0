import sys

from sweep.cli import main

# The guard matters: Dask starts worker processes with multiprocessing's "spawn", which re-imports __main__.
if __name__ == "__main__":
    sys.exit(main())
