"""The experiments room: the reproduction recipe's table of sources, `pipeline reproduce` and `pipeline sweep`.

Both are one public chain (chain.py: plan -> stores -> run -> scores) built on the stages below them
(extract, train, evaluate); `evaluate` itself only scores and predicts. Nothing below imports this room.
"""
