"""The bytes on disk. Each file format of a sweep has exactly one owner here:

| file | module |
|---|---|
| ``manifest.json``, ``jobs.jsonl``, ``provenance.json`` | :mod:`.records` |
| the run table (``run_info``/``errors`` columns, run status) | :mod:`.schema` |
| atomic replacement, fsync, HDF5 open and attributes | :mod:`.files` |

Everyone else goes through these modules.
"""
