"""Import side effect by design: verl's `verl.plugins` entry point imports this module in every
process (driver, Ray workers), and importing it calls `verl_npr.register()`. No other module does this."""

from verl_npr import register

register()
