"""configcenter: plan, render, commit, build, roll out and roll back config across environments."""

__version__ = "0.1.0"
