"""The portal and REST API (``digitize serve``): a thin adapter over storage/archive.py's access gate."""
