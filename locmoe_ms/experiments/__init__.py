"""The experiment suites of docs/results: arms, resumable runs, and what the report reads from them."""
