"""Host patches, one module per SGLang target (each listed in LEDGER.md): each exposes TARGET and
install(), which registers its hook with SGLang's HookRegistry; load_plugins() then applies them."""
