"""Dataset readers in the published layouts; each yields id, RGB image and hair label.

registry.py owns the datasets' names and splits: a dataset is a reader module of this folder named for it.
Reader modules are imported on first use (registry.dataset): extract.imageio imports this package's
errors, and the readers import hairdiff.extract.imageio, so importing them here would make
`import hairdiff.extract.imageio` circular.
"""
