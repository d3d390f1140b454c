"""Imported first by every stage module, for ``spark-submit jobs/<stage>.py``.

Run as a script, a stage module has its own folder, jobs/, at the front of sys.path, where
jobs/features.py would shadow the ``features`` package. Dropping that folder makes imports
resolve as they do under the CLI; when jobs/ is not on sys.path this does nothing.
"""

import os
import sys

_JOBS_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _JOBS_DIR]
