"""simgen's version, in a module of its own so that saving a model or a store needs no import of the package."""

__version__ = "0.1.0"
