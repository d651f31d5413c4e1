"""Stage 5, the bench: an artifact folder in, a report out (TTFT, prefill/decode tok/s, RSS, × speech).

Open harness.py first: bench() checks the settings, loads the artifact's tokenizer and prompts
(prompts.py), starts one worker process per engine (worker.py, engines.py), and turns what they
measured into one report (report.py: records, ratios, the read-bandwidth bound of bandwidth.py, and
the table/JSON/plot printers). A new peer engine is one class in engines.py plus a row in ENGINES.
"""
