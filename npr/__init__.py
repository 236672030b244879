"""native-parallel-reasoner core: schema, layout, masks and the reference fork-join decoder (torch only)."""

__version__ = "0.1.0"
