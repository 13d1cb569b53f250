"""digitize: scanned dossiers to searchable, veraPDF-valid PDF/A-2b e-dossiers."""

import os as _os

# One thread per process, like Tesseract's OMP_THREAD_LIMIT=1: pages and documents run in
# parallel processes instead. NumPy's OpenBLAS would otherwise start a thread per core at
# import and spin them (~0.17 CPU-s per run) for the few vector products we do.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
