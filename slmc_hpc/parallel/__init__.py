"""MPI plumbing, kept apart from the physics: a small communicator adapter (MPI or a single
process) and gradient reduction over ranks. Nothing here initializes MPI at import time."""
