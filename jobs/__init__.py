"""The pipeline's stages, one module each (``run(spark, settings, ...) -> RunSummary``), and all
their IO; the plumbing they share is :mod:`interest_decay.jobs.common`."""
