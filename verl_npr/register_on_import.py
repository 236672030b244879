"""Import side effect by design: verl's `verl.plugins` entry point imports this module in every
process (driver, Ray workers), and importing it calls `verl_npr.register()`. No other module does this."""

import logging

from verl_npr import register

try:
    register()
except Exception as _err:
    # verl logs a failing plugin only at DEBUG level, so say it here before re-raising.
    logging.getLogger("verl_npr").error(
        "NPR's verl plugin did not register: %s (run `npr doctor` for details)", _err)
    raise
