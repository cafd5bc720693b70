"""Client SDK for moep-router (and SGLang workers directly)."""
