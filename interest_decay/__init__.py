"""interest-decay: how every user's interest in a shop fades, on Spark, Delta Lake and Horovod.

The installed package is one namespace whose parts live in the repository's top-level folders:

- ``interest_decay.contract`` (``contract/``): the names every layer agrees on: tables, artifact
  folders, features, the source mapping;
- ``interest_decay.features`` (``features/``): pure DataFrame -> DataFrame transformations;
- ``interest_decay.model`` (``model/``): the Keras model, its loss, training and scoring maths;
- ``interest_decay.jobs`` (``jobs/``): one module per pipeline stage, all IO at the edge, and
  ``interest_decay.jobs.common`` (``jobs/common/``), the plumbing the stages share;
- ``interest_decay.pipeline``: the stages in order; ``interest_decay.cli``: the command line.

Each layer imports only the ones listed above it.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("interest-decay")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
