"""Purchase-intent models: one file per architecture behind the interface in ``tasks.models.base``."""
