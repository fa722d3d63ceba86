"""What every layer shares and nothing of the project's own: the column names of the fact,
filing and taxonomy tables, and the fingerprint that says whether a source file changed.

The bottom of the import graph: modules here import only the standard library, so the store,
the database, the readers and the CSV worker process can all use them (see ARCHITECTURE.md).
"""
