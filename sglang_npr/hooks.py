"""The hooks NPR registered with SGLang in this process, and the check that SGLang applied them all. Kept
apart from `registration` (which imports the backend) so the backend can run the check without an import
cycle; `registration` re-exports these names."""

from __future__ import annotations

from npr.errors import NprError


class NprPatchError(NprError, RuntimeError):
    """A hook NPR registered was not applied by SGLang (its target moved or failed to resolve)."""


_INSTALLED: list = []


def install_patch(module) -> None:
    """Register one patch module's hook (`module.install()`) and remember its TARGET."""
    module.install()
    _INSTALLED.append(module)


def installed_patches() -> list[str]:
    """Targets of the hooks this process registered."""
    return [module.TARGET for module in _INSTALLED]


def check_patches_applied() -> None:
    """Raise NprPatchError unless SGLang applied every hook registered here (call after load_plugins)."""
    from sglang.srt.plugins.hook_registry import HookRegistry

    missing = [target for target in installed_patches() if target not in HookRegistry._patched]
    if missing:
        raise NprPatchError(f"SGLang did not apply NPR's hooks on {missing} (see its log for the reason); this "
                            "SGLang build differs from the supported one. Check `npr doctor` and LEDGER.md.")
