"""The model room: the vendored Mask2Former port and everything that reads or writes a trained head.

A trained head is a run folder's weights with the records that say what it expects: its HeadConfig, the
levels it reads, and the features' fingerprint inputs (backbone, prompt, timestep, taps, resolution). As
nanoGPT's model.py beside train.py and Mask2Former's modeling/ beside train_net.py, this room stands apart
from the engine that trains it (`hairdiff.train`): scoring and prediction load heads from here and never
import the engine.

- mask2former/   the port: head, pixel decoder, transformer decoder, matcher, criterion (what training runs)
- records.py     checked reading of a run's JSON records and safetensors files (one error per damaged file)
- checkpoints.py where a run's checkpoints live and how their state.json is read (written by the engine)
- best.py        RUN/best/: the head with the best validation score
- trained.py     a run's head: its config as JSON, which weights a run offers, loading them, the final head
"""
