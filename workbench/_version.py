"""The package version, in a module of its own so that the modules that record it (tuned files, the
profile database, exported models, benchmark reports) need not import the package's public API."""
__version__ = "0.1.0"
