"""Results the package quotes (written by documented runs; see each file's "command")."""
