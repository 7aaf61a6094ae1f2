"""The experiment suites of docs/results: arms, resumable runs, and what the report reads from them.

May import: config, errors, paths, planning. Runs training as locmoe-train processes, never in-process.
"""
