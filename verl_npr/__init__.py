"""verl plugin: `register()` adds NPR's names to stock verl's registries. Importing this package does nothing."""

from verl_npr.registration import is_registered, register

__all__ = ["register", "is_registered"]
