"""aioflow on existing clusters: Dask distributed, Parsl, MPI, started for real by fixtures."""
