"""Stage 1, the model: a checkpoint (a folder, a hub id, or the demo) in, the canonical model out.

Open checkpoint.py first: load() reads config.json through the family that recognises it
(families/, one small module per MiniCPM family) into one canonical DecoderConfig (config.py) and
serves the weights one tensor at a time, never running code from the model folder. reference.py is
the float forward (torch) that every later stage is checked against; rope.py, fold.py and
tokenizer.py are the pieces the writers share with it. demo.py, testmodels.py and texts.py make the
models and texts this machine can use without a hub. Nothing here imports a later stage.
"""
