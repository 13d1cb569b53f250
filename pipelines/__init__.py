"""Watch-folder and batch pipelines joining the converter to the store and index."""
