"""Thin adapters that forward a training framework's hooks to the :class:`~gradlog.Recorder`.

Each module imports its framework lazily (only when its callback is created), so importing
gradlog never imports Lightning, transformers or accelerate.
"""
