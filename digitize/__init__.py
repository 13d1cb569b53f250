"""digitize: scanned dossiers to searchable, veraPDF-valid PDF/A-2b e-dossiers."""

__version__ = "0.1.0"
