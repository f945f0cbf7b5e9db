"""Small data files bundled with xmr (see README.md here for provenance)."""
