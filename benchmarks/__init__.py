"""Speed benchmarks of genbench (``make bench``); each script writes a JSON record to ``benchmarks/results/``."""

#: The layout of the records; render_docs.py quotes only records of this version (older ones are
#: left on disk until the next run overwrites them).
RECORD_VERSION = 2
